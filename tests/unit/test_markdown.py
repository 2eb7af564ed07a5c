"""render_markdown(): the plan as a pull-request comment, checked against golden files.

Golden files are tests/unit/testdata/markdown/<scenario>.md. After an intended change of the
rendering, rewrite them with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_markdown.py`
and review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from declare.diff import Actual, DesiredEndpoint, diff
from declare.model import ResolvedModel, RolloutPolicy
from declare.plan.actions import Plan
from declare.state.document import State
from declare.views.markdown import render_markdown, signature_problems, warnings_of
from tests.unit.planning_fixtures import applied, desired, model, plan_of

GOLDEN = Path(__file__).parent / "testdata" / "markdown"

IRIS_INPUTS = [
    {"type": "double", "name": "sepal length (cm)", "required": True},
    {"type": "double", "name": "sepal width (cm)", "required": True},
    {"type": "double", "name": "petal length (cm)", "required": True},
    {"type": "double", "name": "petal width (cm)", "required": True},
]
OUTPUTS = [{"type": "long", "required": True}]


def _signed(m: ResolvedModel, inputs: Sequence[object], outputs: Sequence[object]) -> ResolvedModel:
    return replace(m, signature={"inputs": json.dumps(inputs), "outputs": json.dumps(outputs)})


def _with_signatures(
    d: DesiredEndpoint, inputs_by_version: dict[str, list[dict[str, object]]]
) -> DesiredEndpoint:
    models = {
        name: _signed(m, inputs_by_version[m.version or ""], OUTPUTS)
        for name, m in d.models.items()
    }
    return replace(d, models=models)


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.md"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no golden file {path}; run with UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text(encoding="utf-8")


def version_change_plan() -> Plan:
    old = _with_signatures(desired(("1", 100)), {"1": IRIS_INPUTS})
    new = _with_signatures(desired(("2", 100)), {"2": IRIS_INPUTS})
    state, actual = applied(old)
    return plan_of(diff([new], state, actual, "gw"))


def destroy_plan() -> Plan:
    state, actual = applied(desired(("1", 100), size="Medium"))
    return plan_of(diff([], state, actual, "gw"))


def incompatible_plan() -> Plan:
    v2_inputs = [
        {"type": "double", "name": "sepal length (cm)", "required": True},
        {"type": "string", "name": "sepal width (cm)", "required": True},
        {"type": "double", "name": "petal length (cm)", "required": True},
        {"type": "double", "name": "petal ratio", "required": True},
    ]
    old = _with_signatures(desired(("1", 100), size="Medium"), {"1": IRIS_INPUTS})
    new = _with_signatures(desired(("2", 100), size="Small"), {"2": v2_inputs})
    state, actual = applied(old)
    return plan_of(diff([new], state, actual, "gw"))


def test_version_change_golden() -> None:
    text = render_markdown(version_change_plan())
    _check_golden("version-change", text)
    # What a reviewer must see at a glance, whatever the golden file says.
    assert text.splitlines()[0] == (
        "**declare plan:** 0 to create, 1 to update, 0 to destroy; 5 actions."
    )
    assert "| `iris` | update | iris v1 → iris v2 | iris-1 100% → iris-2 100% | 1 |" in text
    assert "[!WARNING]" not in text  # same signature, same capacity: nothing to warn about
    assert "<details>" in text and "drain in-flight requests" in text


def test_destroy_golden() -> None:
    text = render_markdown(destroy_plan())
    _check_golden("destroy", text)
    assert "0 to create, 0 to update, 1 to destroy" in text.splitlines()[0]
    assert "> [!WARNING]" in text
    assert "**Destroy**: endpoint `iris` will be destroyed: 2 replicas in rotation stop" in text
    assert "| `iris` | destroy | iris v1 → none | iris-1 100% → none | 2 → 0 |" in text


def test_incompatible_signature_and_capacity_loss_golden() -> None:
    text = render_markdown(incompatible_plan())
    _check_golden("signature-capacity", text)
    assert "**Capacity loss**: endpoint `iris` goes from 2 replicas in rotation to 1." in text
    assert "**Incompatible signature** in `iris`: iris v1 → iris v2:" in text
    assert "input column `sepal width (cm)` changed type: double → string" in text
    assert "input column `petal width (cm)` removed" in text
    assert "input column `petal ratio` added and required" in text


def test_create_has_no_warning_and_shows_new_model() -> None:
    plan = plan_of(diff([desired(("1", 100))], State(), Actual()), running=False)
    text = render_markdown(plan)
    assert text.splitlines()[0].startswith("**declare plan:** 1 to create, 0 to update")
    assert "| `iris` | create | iris v1 | iris-1 100% | 1 |" in text
    assert warnings_of(plan) == []


def test_no_changes_is_one_line() -> None:
    d = desired(("1", 100))
    state, actual = applied(d)
    text = render_markdown(plan_of(diff([d], state, actual, "gw")))
    assert (
        text == "**declare plan:** no changes. The endpoints match the manifests and what runs.\n"
    )


def test_table_cells_escape_pipes() -> None:
    old = desired(("1", 100))
    new = desired(("2", 100))
    new = replace(new, models={k: replace(m, alias="a|b") for k, m in new.models.items()})
    state, actual = applied(old)
    text = render_markdown(plan_of(diff([new], state, actual, "gw")))
    row = next(line for line in text.splitlines() if line.startswith("| `iris`"))
    assert "iris v2 (@a\\|b)" in row
    assert row.count(" | ") == 4  # five cells: the pipe inside the alias did not split one


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (IRIS_INPUTS, IRIS_INPUTS, []),
        # An optional new input does not break old requests.
        (
            IRIS_INPUTS[:3],
            [*IRIS_INPUTS[:3], {"type": "double", "name": "extra", "required": False}],
            [],
        ),
        (IRIS_INPUTS, IRIS_INPUTS[1:], ["input column `sepal length (cm)` removed"]),
        (
            [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}],
            [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 5]}}],
            [
                'input schema changed: `[{"type":"tensor","tensor-spec":{"dtype":"float32",'
                '"shape":[-1,4]}}]` → `[{"type":"tensor","tensor-spec":{"dtype":"float32",'
                '"shape":[-1,5]}}]`'
            ],
        ),
    ],
)
def test_signature_problems(
    old: list[dict[str, object]], new: list[dict[str, object]], expected: list[str]
) -> None:
    a = _signed(model("iris", "1"), old, OUTPUTS)
    b = _signed(model("iris", "2"), new, OUTPUTS)
    assert signature_problems(a, b) == expected


def test_output_column_retyped_is_incompatible() -> None:
    a = _signed(model("iris", "1"), IRIS_INPUTS, [{"type": "long", "name": "label"}])
    b = _signed(model("iris", "2"), IRIS_INPUTS, [{"type": "string", "name": "label"}])
    assert signature_problems(a, b) == ["output column `label` changed type: long → string"]


def test_model_without_signature_is_not_compared() -> None:
    a = _signed(model("iris", "1"), IRIS_INPUTS, OUTPUTS)
    assert signature_problems(a, model("iris", "2")) == []


def test_canary_rollout_is_shown_beside_the_traffic_change() -> None:
    old = desired(("1", 100))
    new = desired(("2", 100))
    canary = {"strategy": "canary", "steps": [10, 50, 100], "bake_seconds": 30}
    new = replace(new, spec=replace(new.spec, rollout=RolloutPolicy.from_manifest(canary)))
    state, actual = applied(old)
    text = render_markdown(plan_of(diff([new], state, actual, "gw")))
    row = next(line for line in text.splitlines() if line.startswith("| `iris`"))
    assert "iris-1 100% → iris-2 100% (canary 10% → 50% → 100%, bake 30s per step)" in row
