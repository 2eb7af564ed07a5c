"""A served entity's `batching` in diff, plan, their renderings and `describe` (pure).

A batching change starts the replica server otherwise: new replicas of a new generation
replace the old ones (blue/green, as a version change); no change plans no changes, also for
a state recorded before declare knew batching.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema

from declare.describe import describe
from declare.diff import Actual, Change, EndpointChange, Impact, diff
from declare.model import Batching, EndpointSpec
from declare.plan.actions import ActionKind, StartReplica
from declare.plan.codec import action_from_json, action_to_json
from declare.state.document import State
from declare.views.plan import render_human, render_json
from tests.unit.planning_fixtures import applied, desired, plan_of

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
BATCHING = Batching(max_batch_size=32, max_delay_ms=2.0)
FIELD = "served_entities[iris-1].batching"
REPLACE_NOTE = "# replace: new replicas, switch traffic, drain and stop the old"


def _change(before: Batching | None, after: Batching | None) -> EndpointChange:
    state, actual = applied(desired(("1", 100), batching=before))
    (change,) = diff([desired(("1", 100), batching=after)], state, actual, "gw")
    return change


def _replaces_the_replica(change: EndpointChange) -> None:
    assert change.kind is Change.UPDATE
    assert [(s.entity.name, s.index) for s in change.starts] == [("iris-1", 0)]
    assert [h.id for h in change.stops] == ["iris-iris-1-0"]
    (start,) = change.starts
    assert change.before is not None
    assert start.generation != change.before.serving["iris-1"]


def test_batching_added_replaces_the_entitys_replicas() -> None:
    change = _change(None, BATCHING)
    _replaces_the_replica(change)
    assert [(f.path, f.before, f.after, f.impact) for f in change.fields] == [
        (FIELD, None, {"max_batch_size": 32, "max_delay_ms": 2.0}, Impact.REPLACE)
    ]
    text = render_human(plan_of([change]))
    assert f"+ {FIELD} = max_batch_size 32, max_delay_ms 2   {REPLACE_NOTE}" in text
    assert "drain in-flight requests from iris-iris-1-0" in text


def test_batching_changed_replaces_the_entitys_replicas() -> None:
    change = _change(BATCHING, Batching(64, 5.5))
    _replaces_the_replica(change)
    (f,) = change.fields
    assert (f.path, f.impact) == (FIELD, Impact.REPLACE)
    text = render_human(plan_of([change]))
    assert (
        f"~ {FIELD}: max_batch_size 32, max_delay_ms 2 -> max_batch_size 64, max_delay_ms 5.5"
        f"   {REPLACE_NOTE}"
    ) in text


def test_batching_removed_replaces_the_entitys_replicas() -> None:
    change = _change(BATCHING, None)
    _replaces_the_replica(change)
    (f,) = change.fields
    assert (f.path, f.before, f.after, f.impact) == (
        FIELD,
        BATCHING.to_json(),
        None,
        Impact.REPLACE,
    )
    assert f"- {FIELD} = max_batch_size 32, max_delay_ms 2   {REPLACE_NOTE}" in render_human(
        plan_of([change])
    )


def test_the_same_batching_twice_plans_no_changes() -> None:
    change = _change(BATCHING, BATCHING)
    assert change.kind is Change.NOOP
    plan = plan_of([change])
    assert not plan.has_changes
    assert render_human(plan).startswith("No changes.")


def _without_batching(data: Any) -> Any:
    """`data` as a declare without batching wrote it: no `batching` key anywhere."""
    if isinstance(data, dict):
        return {k: _without_batching(v) for k, v in data.items() if k != "batching"}
    if isinstance(data, list):
        return [_without_batching(v) for v in data]
    return data


def test_a_state_recorded_before_batching_plans_no_changes() -> None:
    d = desired(("1", 100))
    state, actual = applied(d)
    record = state.endpoints["iris"]
    assert record.spec is not None
    old_spec = EndpointSpec.from_json(_without_batching(record.spec.to_json()))
    old = replace(state, endpoints={"iris": replace(record, spec=old_spec)})
    assert old.endpoints["iris"].serving == {"iris-1": "78fa9306d513"}  # the golden generation
    (change,) = diff([d], old, actual, "gw")
    assert change.kind is Change.NOOP
    assert render_human(plan_of([change])).startswith("No changes.")


def test_a_new_entity_shows_its_batching_and_its_replica_is_asked_for_it() -> None:
    plan = plan_of(
        diff([desired(("1", 100), batching=BATCHING)], State(), Actual()),
        running=False,
        recorded=None,
    )
    text = render_human(plan)
    assert "+ batching      = batches of up to 32 rows, waiting at most 2 ms for more" in text
    (start,) = [a for a in plan.actions if a.kind is ActionKind.START_REPLICA]
    assert isinstance(start.payload, StartReplica)
    assert start.payload.spec.batching == BATCHING
    decoded = action_from_json(json.loads(json.dumps(action_to_json(start))))
    assert isinstance(decoded.payload, StartReplica)
    assert decoded.payload.spec.batching == BATCHING


def test_a_new_entity_without_batching_shows_none() -> None:
    plan = plan_of(diff([desired(("1", 100))], State(), Actual()), running=False, recorded=None)
    assert "batching" not in render_human(plan)


def test_json_plan_with_batching_matches_its_schema() -> None:
    doc = render_json(plan_of([_change(None, BATCHING)]))
    jsonschema.validate(doc, json.loads((SCHEMAS / "plan.schema.json").read_text()))
    (field,) = doc["changes"][0]["fields"]
    assert field == {
        "path": FIELD,
        "before": None,
        "after": {"max_batch_size": 32, "max_delay_ms": 2.0},
        "impact": "replace",
    }


def test_describe_lists_batching_only_when_set() -> None:
    state, _ = applied(desired(("1", 100), batching=BATCHING))
    (entity,) = describe(state.endpoints["iris"])["config"]["served_entities"]
    assert entity["batching"] == {"max_batch_size": 32, "max_delay_ms": 2.0}
    state, _ = applied(desired(("1", 100)))
    (entity,) = describe(state.endpoints["iris"])["config"]["served_entities"]
    assert "batching" not in entity


def test_a_state_with_batching_matches_the_state_schema() -> None:
    state, _ = applied(desired(("1", 100), batching=BATCHING))
    schema = json.loads((SCHEMAS / "state.schema.json").read_text())
    jsonschema.validate(state.to_json(), schema)
