"""build_plan(): changes -> an ordered DAG of actions, and its renderings (pure)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import jsonschema
import networkx as nx

from declare.diff import Actual, diff
from declare.plan.actions import ActionKind
from declare.state.document import State
from declare.views.plan import render_human, render_json
from tests.unit.planning_fixtures import applied, desired, plan_of

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_create_starts_gateway_and_routes_after_readiness() -> None:
    plan = plan_of(diff([desired(("1", 100))], State(), Actual()), running=False, recorded=None)
    kinds = [a.kind for a in plan.actions]
    assert kinds == [
        ActionKind.START_GATEWAY,
        ActionKind.START_REPLICA,
        ActionKind.AWAIT_READY,
        ActionKind.SET_ROUTES,
    ]
    g = plan.graph()
    assert nx.has_path(g, "gateway.start", "endpoint.iris.routes")
    assert nx.has_path(g, "endpoint.iris.entity[iris-1].replica[0].ready", "endpoint.iris.routes")


def test_version_change_orders_start_ready_switch_drain_stop() -> None:
    state, actual = applied(desired(("1", 100)))
    plan = plan_of(diff([desired(("2", 100))], state, actual, "gw"))
    ids = [a.id for a in plan.actions]
    assert ids == [
        "endpoint.iris.entity[iris-2].replica[0].start",
        "endpoint.iris.entity[iris-2].replica[0].ready",
        "endpoint.iris.routes",
        "endpoint.iris.drain",
        "endpoint.iris.replica[iris-iris-1-0].stop",
    ]
    g = plan.graph()
    for before, after in itertools.pairwise(ids):
        assert nx.has_path(g, before, after), (before, after)


def test_noop_plan_has_no_actions_and_says_so() -> None:
    d = desired(("1", 100))
    state, actual = applied(d)
    plan = plan_of(diff([d], state, actual, "gw"))
    assert not plan.has_changes
    assert render_human(plan).startswith("No changes.")


def test_destroy_of_last_endpoint_stops_gateway_last() -> None:
    state, actual = applied(desired(("1", 100)))
    plan = plan_of(diff([], state, actual, "gw"))
    assert plan.actions[-1].kind is ActionKind.STOP_GATEWAY
    assert plan.counts() == {"add": 0, "change": 0, "destroy": 1}


def test_human_output_shows_change_actions_and_count_line() -> None:
    state, actual = applied(desired(("1", 100)))
    text = render_human(plan_of(diff([desired(("2", 100))], state, actual, "gw")))
    assert "# endpoint.iris will be updated in-place" in text
    assert "+ served_entities[iris-2]" in text and "iris v2" in text
    assert "drain in-flight requests" in text
    assert text.rstrip().endswith("Plan: 0 to add, 1 to change, 0 to destroy; 5 actions.")


def test_json_plan_matches_its_schema() -> None:
    state, actual = applied(desired(("1", 100)))
    doc = render_json(plan_of(diff([desired(("2", 100))], state, actual, "gw")))
    schema = json.loads((SCHEMAS / "plan.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["summary"] == {"add": 0, "change": 1, "destroy": 0, "actions": 5}
    assert doc["changes"][0]["models_after"]["iris-2"]["version"] == "2"
