"""The autoscaler's decisions (pure): ranges from workload sizes and explicit concurrency,
scale up at once, down one step after a quiet period, to zero after idle, wake on a held
request; Databricks' validation of explicit concurrency."""

from __future__ import annotations

from typing import Any

import pytest

from declare.model.scaling import (
    AutoscalePolicy,
    ReplicaRange,
    concurrency_problems,
    concurrency_range,
    replica_range,
)
from declare.runtime.decide import Demand, Memory, Trace, decide

POLICY = AutoscalePolicy(scale_down_after_seconds=300, scale_to_zero_after_seconds=1800)
KEY = ("iris", "iris-1")


@pytest.mark.parametrize(
    ("size", "zero", "expected"),
    [
        ("Small", False, ReplicaRange(1, 1)),
        ("Small", True, ReplicaRange(0, 1)),
        ("Medium", False, ReplicaRange(2, 4)),
        ("Large", False, ReplicaRange(4, 16)),
        ("Large", True, ReplicaRange(0, 16)),
    ],
)
def test_workload_sizes_are_concurrency_ranges(
    size: str, zero: bool, expected: ReplicaRange
) -> None:
    assert replica_range(concurrency_range(size, None, None, zero), None, zero) == expected


def test_explicit_concurrency_and_pinned_replicas() -> None:
    assert replica_range(concurrency_range("Small", 8, 32, False), None, False) == (
        ReplicaRange(2, 8)
    )
    assert replica_range((4, 4), 3, False) == ReplicaRange(3, 3, pinned=True)
    assert replica_range((4, 4), 3, True) == ReplicaRange(0, 3, pinned=True)
    # a provider whose replica serves 8 concurrent requests needs half as many
    assert replica_range((16, 64), None, False, per_replica=8) == ReplicaRange(2, 8)


def test_the_plan_describes_a_range() -> None:
    assert ReplicaRange(1, 1).describe() == "1 replica"
    assert ReplicaRange(2, 4).describe() == "2..4 replicas, autoscaled by concurrency"
    assert ReplicaRange(0, 4).describe(1800) == (
        "1..4 replicas, autoscaled by concurrency; to zero after 30 min"
    )


@pytest.mark.parametrize(
    ("raw", "field", "says"),
    [
        ({"min_provisioned_concurrency": 4, "workload_size": "Small",
          "max_provisioned_concurrency": 8}, "min_provisioned_concurrency", "together with"),
        ({"min_provisioned_concurrency": 4}, "max_provisioned_concurrency", "is required"),
        ({"max_provisioned_concurrency": 6}, "max_provisioned_concurrency", "multiple of 4"),
        ({"min_provisioned_concurrency": 8, "max_provisioned_concurrency": 4},
         "min_provisioned_concurrency", "must not exceed"),
        ({"min_provisioned_concurrency": 0, "max_provisioned_concurrency": 4},
         "min_provisioned_concurrency", "scale_to_zero_enabled"),
        ({"max_provisioned_concurrency": 0}, "max_provisioned_concurrency", "at least 4"),
    ],
)  # fmt: skip
def test_explicit_concurrency_follows_databricks_rules(
    raw: dict[str, object], field: str, says: str
) -> None:
    problems = concurrency_problems(raw)
    assert any(f == field and says in m for f, m in problems), problems


def test_valid_explicit_concurrency_has_no_problem() -> None:
    assert concurrency_problems({}) == []
    assert concurrency_problems({"min_provisioned_concurrency": 4,
                                 "max_provisioned_concurrency": 16}) == []  # fmt: skip
    assert concurrency_problems({"min_provisioned_concurrency": 0,
                                 "max_provisioned_concurrency": 8,
                                 "scale_to_zero_enabled": True}) == []  # fmt: skip


def _decide(target: int, demand: Demand, trace: Trace, rng: ReplicaRange, now: float):  # type: ignore[no-untyped-def]
    return decide(
        rng=rng, target=target, demand=demand, trace=trace, policy=POLICY, per_replica=4, now=now
    )


def test_scale_up_at_once_to_what_the_demand_needs_within_the_range() -> None:
    trace = Trace(since=0.0)
    v = _decide(1, Demand(inflight=9, peak=11), trace, ReplicaRange(1, 4), 10.0)
    assert v is not None and v.target == 3 and "11 requests" in v.reason
    v = _decide(1, Demand(inflight=40, peak=40), trace, ReplicaRange(1, 4), 10.0)
    assert v is not None and v.target == 4
    assert _decide(4, Demand(inflight=40, peak=40), trace, ReplicaRange(1, 4), 10.0) is None
    assert _decide(1, Demand(inflight=3, peak=4), trace, ReplicaRange(1, 4), 10.0) is None


def test_scale_down_one_step_only_after_a_whole_quiet_period() -> None:
    memory = Memory()
    t = 1000.0
    memory = memory.observe(KEY, t, Demand(peak=12), 400)
    for i in range(1, 31):  # quiet for 300 s after a burst
        memory = memory.observe(KEY, t + 10 * i, Demand(peak=1), 400)
    trace = memory.trace(KEY)
    early = _decide(3, Demand(), trace, ReplicaRange(1, 4), t + 200)
    assert early is None  # the burst is less than 300 s old
    later = _decide(3, Demand(), trace, ReplicaRange(1, 4), t + 305)
    assert later is not None and later.target == 2 and "scale down" in later.reason
    floor = _decide(1, Demand(), trace, ReplicaRange(1, 4), t + 305)
    assert floor is None  # never below the range's bottom


def test_a_fresh_runtime_waits_a_quiet_period_before_scaling_down() -> None:
    trace = Memory().observe(KEY, 1000.0, Demand(), 400).trace(KEY)
    assert _decide(3, Demand(), trace, ReplicaRange(1, 4), 1100.0) is None


def test_to_zero_after_idle_and_awake_on_a_held_request() -> None:
    memory = Memory().observe(KEY, 0.0, Demand(peak=1, last_request_at=0.0), 2000)
    rng = ReplicaRange(0, 4)
    assert _decide(1, Demand(), memory.trace(KEY), rng, 1000.0) is None
    zero = _decide(1, Demand(), memory.trace(KEY), rng, 1900.0)
    assert zero is not None and zero.target == 0 and "no request for 1800 s" in zero.reason
    assert _decide(0, Demand(), memory.trace(KEY), rng, 1901.0) is None
    wake = _decide(0, Demand(held=1), memory.trace(KEY), rng, 1902.0)
    assert wake is not None and wake.target == 1 and "wake from zero" in wake.reason
    burst = _decide(0, Demand(held=10), memory.trace(KEY), rng, 1902.0)
    assert burst is not None and burst.target == 3


def test_a_request_whose_hold_ran_out_before_the_look_still_wakes() -> None:
    """Held past its hold_seconds and answered 503 while the runtime was busy acting: at the
    next look nothing is held, but the peak says a request came; the next ones need a
    replica."""
    memory = Memory().observe(KEY, 0.0, Demand(), 2000)
    rng = ReplicaRange(0, 4)
    wake = _decide(0, Demand(peak=1, last_request_at=1901.5), memory.trace(KEY), rng, 1902.0)
    assert wake is not None and wake.target == 1
    assert "1 request(s) since the last look" in wake.reason


def test_a_pinned_count_only_goes_to_zero_and_back() -> None:
    rng = ReplicaRange(0, 3, pinned=True)
    memory = Memory().observe(KEY, 0.0, Demand(), 2000)
    assert _decide(3, Demand(peak=50), memory.trace(KEY), rng, 10.0) is None
    wake = _decide(0, Demand(held=1), memory.trace(KEY), rng, 10.0)
    assert wake is not None and wake.target == 3
    zero = _decide(3, Demand(), memory.trace(KEY), rng, 1900.0)
    assert zero is not None and zero.target == 0


# -- what reaches the gateway and the plan ---------------------------------------------------


def test_the_routing_table_carries_the_endpoints_hold_and_a_change_is_a_live_push() -> None:
    from dataclasses import replace as _replace

    from declare.diff import diff
    from declare.model import AutoscalePolicy
    from declare.plan.actions import ActionKind
    from declare.routing import routing_table
    from tests.unit.planning_fixtures import applied, desired, plan_of

    def held(seconds: float) -> Any:
        d = desired(("1", 100))
        return _replace(d, spec=_replace(d.spec, autoscaling=AutoscalePolicy(hold_seconds=seconds)))

    state, actual = applied(held(60))
    assert routing_table(state, 1).endpoints["iris"].hold_seconds == 60
    assert not diff([held(60)], state, actual, "gw")[0].route_push
    plan = plan_of(diff([held(5)], state, actual, "gw"))
    assert [a.kind for a in plan.actions] == [ActionKind.SET_ROUTES]


def test_a_project_without_the_runtime_holds_no_request(tmp_path: Any) -> None:
    from declare.project import open_project

    (tmp_path / "declare.yaml").write_text("runtime:\n  enabled: false\n")
    assert open_project(tmp_path, {}).gateway_settings().hold_queue == 0
    on = tmp_path / "on"
    on.mkdir()
    assert open_project(on, {}).gateway_settings().hold_queue == 1000


def test_the_next_step_down_waits_another_quiet_period() -> None:
    trace = Memory().observe(KEY, 0.0, Demand(), 400)
    for i in range(1, 40):
        trace = trace.observe(KEY, 10.0 * i, Demand(), 400)
    quiet = trace.trace(KEY)
    step = decide(
        rng=ReplicaRange(1, 4), target=3, demand=Demand(), trace=quiet, policy=POLICY,
        per_replica=4, now=390.0, last_change_at=380.0,
    )  # fmt: skip
    assert step is None  # 10 s after the last step down
    step = decide(
        rng=ReplicaRange(1, 4), target=3, demand=Demand(), trace=quiet, policy=POLICY,
        per_replica=4, now=390.0, last_change_at=80.0,
    )  # fmt: skip
    assert step is not None and step.target == 2
