"""render_dot / render_mermaid: the plan's DAG, every action a node, every constraint an edge."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from declare.diff import diff
from declare.plan.actions import Action, Plan, StartGateway
from declare.views.graph import render_dot, render_mermaid
from tests.unit.conftest import Ran
from tests.unit.planning_fixtures import applied, desired, plan_of


def _version_change() -> Plan:
    state, actual = applied(desired(("1", 100)))
    return plan_of(diff([desired(("2", 100))], state, actual, "gw"))


def _labels(text: str, pattern: str) -> dict[str, str]:
    return dict(re.findall(pattern, text))


def test_dot_has_every_action_and_every_edge() -> None:
    plan = _version_change()
    dot = render_dot(plan)
    assert dot.startswith("digraph plan {") and dot.rstrip().endswith("}")
    labels = _labels(dot, r'(a\d+) \[label="([^"]+)"')
    assert len(labels) == len(plan.actions)
    by_label = {f"{i}. {a.kind.symbol} {a.summary}": a.id for i, a in enumerate(plan.actions, 1)}
    node_to_action = {node: by_label[label] for node, label in labels.items()}
    edges = {
        (node_to_action[b], node_to_action[a]) for b, a in re.findall(r"(a\d+) -> (a\d+);", dot)
    }
    assert edges == set(plan.edges)
    # The endpoint's actions are grouped in one cluster.
    assert 'subgraph cluster_0 {\n    label="endpoint iris";' in dot


def test_mermaid_flowchart_has_every_action_and_edge() -> None:
    plan = _version_change()
    text = render_mermaid(plan)
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert '  subgraph g0["endpoint iris"]' in lines
    assert sum(":::" in line for line in lines) == len(plan.actions)
    assert len(re.findall(r"^  a\d+ --> a\d+$", text, re.M)) == len(plan.edges)
    assert '    a3["3. ~ route traffic: iris-2 100%"]:::change' in lines


def test_quotes_in_summaries_cannot_break_either_syntax() -> None:
    tricky = Action('x"y', None, 'start "the" gateway \\ now', StartGateway("h", 1, "gw"))
    plan = Plan(changes=(), actions=(tricky,), edges=())
    assert 'a1 [label="1. + start \\"the\\" gateway \\\\ now"' in render_dot(plan)
    assert 'a1["1. + start #quot;the#quot; gateway \\ now"]:::create' in render_mermaid(plan)


# -- the commands, on a project served by the in-memory fake provider ----------------------


@pytest.fixture
def fake_project(tmp_path: Path) -> Path:
    """A project whose endpoint serves a model folder (no registry) on the fake provider."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "demo.yaml").write_text(
        "name: demo\nprovider: fake\nconfig:\n  served_entities:\n"
        "    - name: m\n      model_uri: ./model\n"
    )
    return tmp_path


def test_plan_format_markdown_with_detailed_exitcode(
    fake_project: Path, declare_cli: Callable[..., Ran]
) -> None:
    result = declare_cli("plan", "--format", "markdown", "--detailed-exitcode", str(fake_project))
    assert result.returncode == 2, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "**declare plan:** 1 to create, 0 to update, 0 to destroy; 6 actions."
    assert "| `demo` | create |" in result.stdout and "| m 100% | 1 |" in result.stdout
    assert "<details>" in result.stdout
    # --json stays an alias of --format json; the two cannot disagree.
    as_json = declare_cli("plan", "--json", str(fake_project))
    assert json.loads(as_json.stdout)["summary"]["add"] == 1
    both = declare_cli("plan", "--json", "--format", "markdown", str(fake_project))
    assert both.returncode == 1 and "pick one" in both.stderr
    bad = declare_cli("plan", "--format", "html", str(fake_project))
    assert bad.returncode == 1
    assert "--format: 'html' is not one of text, json, markdown" in bad.stderr


def test_graph_command_prints_dot_and_mermaid(
    fake_project: Path, declare_cli: Callable[..., Ran]
) -> None:
    dot = declare_cli("graph", str(fake_project))
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith("digraph plan {")
    assert "route traffic: m 100%" in dot.stdout
    mermaid = declare_cli("graph", "--format", "mermaid", str(fake_project))
    assert mermaid.stdout.startswith("flowchart TD\n")
    assert '  subgraph g1["endpoint demo"]' in mermaid.stdout.splitlines()
    wrong = declare_cli("graph", "--format", "svg", str(fake_project))
    assert wrong.returncode == 1 and "is not one of dot, mermaid" in wrong.stderr
