"""Progressive rollouts in the plan (steps, bakes, guards) and the guard verdicts (pure)."""

from __future__ import annotations

from dataclasses import replace

import networkx as nx

from declare.diff import diff
from declare.model import Figures, Guards, RolloutPolicy, judge, rollout_problems
from declare.plan import GatewayInput, PlanInput, build_plan
from declare.plan.actions import ActionKind, Plan, ShiftTraffic
from declare.plan.build import blend
from declare.views.plan import render_human, render_json
from tests.unit.planning_fixtures import applied, desired, plan_of

CANARY = {
    "strategy": "canary",
    "steps": [10, 50, 100],
    "bake_seconds": 30,
    "guards": {"max_error_rate": 0.05, "max_p99_latency_ms": 500, "min_requests": 50},
    "deadline_seconds": 600,
}


def _with_rollout(d, rollout):  # type: ignore[no-untyped-def]
    return replace(d, spec=replace(d.spec, rollout=RolloutPolicy.from_manifest(rollout)))


def _plan(before, after) -> Plan:  # type: ignore[no-untyped-def]
    state, actual = applied(before)
    changes = diff([after], state, actual, "gw")
    return plan_of(changes)


def test_policy_from_manifest() -> None:
    assert RolloutPolicy.from_manifest(None).steps == (100,)
    assert RolloutPolicy.from_manifest({"strategy": "linear", "step_percentage": 25}).steps == (
        25,
        50,
        75,
        100,
    )
    assert RolloutPolicy.from_manifest(CANARY).steps == (10, 50, 100)


def test_rollout_problems_are_located_by_field() -> None:
    assert rollout_problems({"strategy": "canary", "steps": [50, 10]}) == [
        (("steps",), "must increase strictly, got [50, 10]")
    ]
    assert rollout_problems({"strategy": "canary", "steps": [10, 50]}) == [
        (("steps",), "must end at 100, got [10, 50]")
    ]
    assert rollout_problems({"steps": [100]}) == [
        (("steps",), "is only used with strategy: canary")
    ]


def test_blend_sums_to_100() -> None:
    old = (("a", "g1", 100),)
    new = (("b", "g2", 100),)
    assert blend(old, new, 10) == (("a", "g1", 90), ("b", "g2", 10))
    split = blend((("a", "g1", 67), ("c", "g3", 33)), new, 50)
    assert sum(p for _, _, p in split) == 100


def test_canary_plan_has_steps_bakes_and_keeps_old_until_last_bake() -> None:
    plan = _plan(desired(("1", 100)), _with_rollout(desired(("2", 100)), CANARY))
    kinds = [a.kind for a in plan.actions]
    assert kinds == [
        ActionKind.START_REPLICA,
        ActionKind.AWAIT_READY,
        ActionKind.SHIFT_TRAFFIC,
        ActionKind.BAKE,
        ActionKind.SHIFT_TRAFFIC,
        ActionKind.BAKE,
        ActionKind.SET_ROUTES,
        ActionKind.BAKE,
        ActionKind.DRAIN,
        ActionKind.STOP_REPLICA,
    ]
    shift1 = plan.action("endpoint.iris.shift[1]")
    assert isinstance(shift1.payload, ShiftTraffic)
    assert shift1.payload.split[1][0] == "iris-2" and shift1.payload.split[1][2] == 10
    g = plan.graph()
    assert nx.has_path(g, "endpoint.iris.bake[3]", "endpoint.iris.drain")
    text = render_human(plan)
    assert "rollout  = canary 10% -> 50% -> 100%, bake 30s after each step" in text
    assert "roll back if error rate > 0.05 or p99 > 500 ms (judged from 50 requests)" in text
    assert "shift traffic, step 1/3 (10% to the new config): iris-1 90%, iris-2 10%" in text
    assert "deadline 600s" in text


def test_traffic_only_change_is_one_live_step_even_with_canary() -> None:
    before = desired(("1", 50), ("2", 50))
    after = _with_rollout(desired(("1", 90), ("2", 10)), CANARY)
    plan = _plan(before, after)
    assert [a.kind for a in plan.actions] == [ActionKind.SET_ROUTES]


def test_all_at_once_with_bake_watches_before_stopping_old() -> None:
    plan = _plan(desired(("1", 100)), _with_rollout(desired(("2", 100)), {"bake_seconds": 10}))
    ids = [a.id for a in plan.actions]
    assert ids.index("endpoint.iris.routes") < ids.index("endpoint.iris.bake[1]")
    assert ids.index("endpoint.iris.bake[1]") < ids.index("endpoint.iris.drain")


def test_capacity_loss_is_flagged() -> None:
    plan = _plan(desired(("1", 100), size="Large"), desired(("1", 100), size="Small"))
    text = render_human(plan)
    assert "! capacity loss: from 4 to 1 replicas in rotation" in text
    assert render_json(plan)["changes"][0]["capacity"] == {
        "before": 4,
        "after": 1,
        "peak": 4,
        "loss": True,
    }


def test_destroy_says_it_stops_serving() -> None:
    state, actual = applied(desired(("1", 100)))
    plan = build_plan(
        PlanInput("p", diff([], state, actual, "gw"), GatewayInput(True, "h", 1, "gw", "gw"))
    )
    assert "! stops serving: endpoint iris is destroyed (1 replica in rotation now)" in (
        render_human(plan)
    )


def test_guards_judged_only_past_min_requests() -> None:
    g = Guards(max_error_rate=0.1, max_p99_latency_ms=100, min_requests=20)
    few = {"iris-2": Figures(requests=5, errors=5, error_rate=1.0, p99_ms=900)}
    assert judge(g, few) == ""
    bad = {"iris-2": Figures(requests=40, errors=8, error_rate=0.2, p99_ms=10)}
    assert "error rate 0.200 (8 of 40 requests) > max_error_rate 0.1" in judge(g, bad)
    slow = {"iris-2": Figures(requests=40, errors=0, error_rate=0.0, p99_ms=250)}
    assert "p99 latency 250 ms" in judge(g, slow)
    ok = {"iris-2": Figures(requests=40, errors=1, error_rate=0.025, p99_ms=20)}
    assert judge(g, ok) == ""
