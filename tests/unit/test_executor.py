"""The executor on the fake provider and an in-memory gateway, probe and clock: every
outcome of an apply (success, failed start, build and readiness, a guard trip at each step,
the deadline, a crash between any two actions) and the undo of each action kind. Seconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from declare.apply import Event
from declare.apply.events import (
    ActionFailed,
    ActionFinished,
    ActionStarted,
    DrainTimedOut,
    GuardsPassed,
    StatusNotShown,
    UndoFailed,
    UndoStep,
)
from declare.apply.handlers import HANDLERS
from declare.diff import DesiredEndpoint
from declare.gateway.table import RoutingTable
from declare.model import ReplicaSpec
from declare.plan.actions import PAYLOAD_TYPES, ActionKind, Plan
from declare.state.document import IN_PROGRESS, NOT_UPDATING, UPDATE_FAILED, State
from providers.fake import reset_worlds
from tests.fakes import reset_gateways
from tests.unit import planning_fixtures as pf
from tests.unit.fake_world import CANARY, Crash, World, version


def failed_texts(world: World) -> list[str]:
    return [e.error for e in world.events if isinstance(e, ActionFailed)]


# -- success -------------------------------------------------------------------------------


def test_create_then_change_version_with_no_failure(world: World) -> None:
    first = world.apply(version("1"))
    assert first.ok and [o.name for o in first.endpoints] == ["iris"]
    ep = world.state().endpoints["iris"]
    assert (ep.config_update, ep.config_version) == (NOT_UPDATING, 1)
    assert [r.ready for r in ep.replicas] == [True]
    assert world.routed() == {"iris-1": 100}
    assert world.gateway.starts == 1
    world.converged(version("1"))

    second = world.apply(version("2"))
    assert second.ok and second.counts() == {"add": 0, "change": 1, "destroy": 0}
    ep = world.state().endpoints["iris"]
    assert ep.config_version == 2 and {r.entity for r in ep.replicas} == {"iris-2"}
    assert world.routed() == {"iris-2": 100}
    world.converged(version("2"))
    started = [e.action.kind for e in world.events if isinstance(e, ActionStarted)]
    assert started.count(ActionKind.STOP_REPLICA) == 1


def test_the_management_api_saw_in_progress_before_the_switch(world: World) -> None:
    world.apply(version("1"))
    world.gateway.tables.clear()
    world.apply(version("2"))
    states = [
        t.endpoints["iris"].description["state"]["config_update"]
        for t in world.gateway.tables
        if "iris" in t.endpoints
    ]
    assert states[0] == IN_PROGRESS and states[-1] == NOT_UPDATING


def test_scale_up_adds_replicas_and_keeps_the_running_one(world: World) -> None:
    world.apply(version("1"))
    before = world.provider.alive_ids()
    assert world.apply(version("1", size="Medium")).ok
    after = world.provider.alive_ids()
    assert set(before) < set(after) and len(after) == 2
    world.converged(version("1", size="Medium"))


def test_a_canary_that_passes_reports_each_bake_with_its_figures(world: World) -> None:
    world.apply(version("1"))
    world.gateway.figures = lambda ep, key, table: {"requests": 40, "errors": 0, "p99_ms": 12.0}
    assert world.apply(version("2", rollout=CANARY)).ok
    passed = [e for e in world.events if isinstance(e, GuardsPassed)]
    assert [(e.step, e.of) for e in passed] == [(1, 3), (2, 3), (3, 3)]
    assert passed[0].figures["iris-2"].requests == 40
    splits = [
        dict(t.endpoints["iris"].routes) for t in world.gateway.tables if "iris" in t.endpoints
    ]
    assert {"iris-1": 90, "iris-2": 10} in splits and {"iris-1": 50, "iris-2": 50} in splits
    world.converged(version("2", rollout=CANARY))


def test_destroy_stops_everything_and_forgets_the_endpoint(world: World) -> None:
    world.apply(version("1"))
    result = world.apply(destroy=True)
    assert result.ok and result.counts()["destroy"] == 1
    assert world.state().endpoints == {} and world.state().gateway is None
    assert world.provider.alive_ids() == () and not world.gateway.running


def test_refresh_only_forgets_a_dead_replica_and_starts_nothing(world: World) -> None:
    world.apply(version("1"))
    (rid,) = world.provider.alive_ids()
    world.provider.kill(rid)
    assert world.apply(version("1"), refresh_only=True).ok
    assert world.state().endpoints["iris"].replicas == ()
    assert world.provider.alive_ids() == ()


def test_a_dead_replica_is_replaced_and_an_orphan_stopped(world: World) -> None:
    world.apply(version("1"))
    (rid,) = world.provider.alive_ids()
    world.provider.kill(rid)
    orphan = world.provider.start_replica(
        ReplicaSpec(world.project().name, "iris", "iris-1", "gen", 0, pf.model())
    )  # runs under the project's labels; no state knows it
    assert orphan.id in world.provider.alive_ids()
    assert any(a.kind is ActionKind.STOP_ORPHAN for a in world.plan(version("1")).actions)
    assert world.apply(version("1")).ok
    assert orphan.id not in world.provider.alive_ids()
    world.converged(version("1"))


# -- failures before traffic moves -------------------------------------------------------


def test_a_version_that_fails_readiness_leaves_the_old_one_serving(world: World) -> None:
    world.apply(version("1"))
    old = world.provider.alive_ids()
    world.probe.fail.add("models:/iris/2")
    result = world.apply(version("2"))
    assert not result.ok
    (outcome,) = result.endpoints
    assert "answers its input example with an error" in outcome.error
    ep = world.state().endpoints["iris"]
    assert ep.config_update == UPDATE_FAILED and "input example" in ep.message
    assert world.provider.alive_ids() == old and world.routed() == {"iris-1": 100}
    undone = [e.what for e in world.events if isinstance(e, UndoStep)]
    assert len(undone) == 1 and undone[0].startswith("stopping iris-iris-2")
    world.probe.fail.clear()
    assert world.apply(version("2")).ok  # the next apply proposes it again
    world.converged(version("2"))


def test_a_replica_that_cannot_start_fails_only_its_endpoint(world: World) -> None:
    world.apply(version("1"))
    world.provider.fail_start.add("models:/iris/2")
    result = world.apply(version("2"))
    assert not result.ok and "fake start of models:/iris/2 failed" in result.endpoints[0].error
    assert world.routed() == {"iris-1": 100}
    assert world.state().endpoints["iris"].config_update == UPDATE_FAILED


def test_a_failed_build_blocks_the_endpoint_and_is_a_global_error(world: World) -> None:
    world.provider.fail_build.add("env1")
    result = world.apply(version("1"))
    assert not result.ok
    assert any("fake build of environment env1 failed" in e for e in result.global_errors)
    assert "not applied because build[env1] failed" in result.endpoints[0].error
    assert world.provider.alive_ids() == ()


def test_a_gateway_that_stops_mid_apply_fails_the_switch(world: World) -> None:
    world.apply(version("1"))
    project = world.project()
    gateway = world.gateway

    def stop_before_switch(event: Event) -> None:
        if isinstance(event, ActionStarted) and event.action.kind is ActionKind.SET_ROUTES:
            gateway.running = False

    result = world.apply(version("2"), hooks=stop_before_switch, project=project)
    assert not result.ok
    assert "the gateway is not running, so routes cannot be switched" in result.endpoints[0].error
    assert "iris-2" not in {r.entity for r in world.state().endpoints["iris"].replicas}


def test_a_status_push_the_gateway_refuses_changes_no_outcome(world: World) -> None:
    world.apply(version("1"))
    world.gateway.refuse_puts = 1  # the IN_PROGRESS status push
    assert world.apply(version("2")).ok
    assert any(isinstance(e, StatusNotShown) for e in world.events)
    assert world.routed() == {"iris-2": 100}


# -- failures after traffic moved --------------------------------------------------------


@pytest.mark.parametrize("step", [1, 2, 3])
def test_a_guard_trip_at_each_step_sends_all_traffic_back(world: World, step: int) -> None:
    world.apply(version("1"))
    old = world.provider.alive_ids()
    at = CANARY["steps"][step - 1]

    def figures(ep: str, key: str, table: RoutingTable) -> dict[str, Any] | None:
        share = dict(table.endpoints[ep].routes).get(key, 0)
        bad = key == "iris-2" and share == at
        return {"requests": 50, "errors": 25 if bad else 0, "error_rate": 0.5 if bad else 0.0}

    world.gateway.figures = figures
    result = world.apply(version("2", rollout=CANARY))
    assert not result.ok
    assert f"rollout guard tripped at step {step}/3" in result.endpoints[0].error
    assert "iris-2 error rate 0.500 (25 of 50 requests) > max_error_rate 0.05" in (
        result.endpoints[0].error
    )
    assert world.routed() == {"iris-1": 100}
    assert world.provider.alive_ids() == old
    ep = world.state().endpoints["iris"]
    assert ep.split == () and ep.config_update == UPDATE_FAILED
    assert [r.retired for r in ep.replicas] == [False]
    undone = [e.what for e in world.events if isinstance(e, UndoStep)]
    assert undone[0] == "all traffic back to what served before"


def test_a_rollout_past_its_deadline_is_rolled_back(world: World) -> None:
    world.apply(version("1"))
    world.gateway.figures = lambda ep, key, table: {"requests": 50, "errors": 0}
    slow = {**CANARY, "bake_seconds": 60, "deadline_seconds": 90}
    result = world.apply(version("2", rollout=slow))
    assert not result.ok
    assert "rollout deadline passed" in result.endpoints[0].error
    assert "deadline_seconds is 90" in result.endpoints[0].error
    assert world.routed() == {"iris-1": 100}


def test_a_failure_after_the_old_replicas_began_to_stop_rolls_forward(world: World) -> None:
    world.apply(version("1"))
    world.provider.fail_stop.add("models:/iris/1")
    result = world.apply(version("2"))
    assert not result.ok
    error = result.endpoints[0].error
    assert error.startswith("switched to the new config, but ") and "fail_stop" in error
    assert world.routed() == {"iris-2": 100}  # no way back: the new config keeps serving
    assert not any(isinstance(e, UndoStep) for e in world.events)
    world.provider.fail_stop.clear()
    assert world.apply(version("2")).ok
    world.converged(version("2"))


def test_an_undo_that_fails_is_reported_and_the_rest_is_undone(world: World) -> None:
    world.apply(version("1"))
    world.probe.fail.add("models:/iris/2")
    world.provider.fail_stop.add("models:/iris/2")
    result = world.apply(version("2"))
    assert not result.ok
    assert any(isinstance(e, UndoFailed) and "fail_stop" in e.error for e in world.events)
    assert world.state().endpoints["iris"].config_update == UPDATE_FAILED
    world.provider.fail_stop.clear()
    world.probe.fail.clear()
    assert world.apply(version("2")).ok
    world.converged(version("2"))


def test_a_drain_that_times_out_is_reported_and_the_stop_goes_on(world: World) -> None:
    world.apply(version("1"))
    world.gateway.stuck.update(world.provider.alive_ids())
    assert world.apply(version("2")).ok
    (timed_out,) = [e for e in world.events if isinstance(e, DrainTimedOut)]
    assert timed_out.seconds == 30.0
    world.converged(version("2"))


def test_a_gateway_gone_during_a_bake_fails_it_and_traffic_goes_back(world: World) -> None:
    world.apply(version("1"))
    gateway = world.gateway

    def stop_in_bake(event: Event) -> None:
        if isinstance(event, ActionStarted) and event.action.kind is ActionKind.BAKE:
            gateway.running = False

    result = world.apply(version("2", rollout=CANARY), hooks=stop_in_bake)
    assert not result.ok and "the gateway stopped during the bake" in result.endpoints[0].error
    assert any(isinstance(e, UndoFailed) for e in world.events)  # it cannot take traffic back
    gateway.running = True
    assert world.apply(version("2")).ok


def test_with_no_gateway_left_a_drain_has_nothing_to_wait_for(world: World) -> None:
    world.apply(version("1"))
    gateway = world.gateway

    def stop_before_drain(event: Event) -> None:
        if isinstance(event, ActionStarted) and event.action.kind is ActionKind.DRAIN:
            gateway.running = False

    world.apply(destroy=True, hooks=stop_before_drain)
    assert world.provider.alive_ids() == ()
    assert world.state().endpoints == {}


# -- crashes ---------------------------------------------------------------------------------


def _crash_at(k: int) -> Callable[[Event], None]:
    seen = [0]

    def hook(event: Event) -> None:
        if isinstance(event, ActionStarted):
            seen[0] += 1
            if seen[0] == k:
                raise Crash(f"killed at action {k}")

    return hook


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, version("1")),
        (version("1"), version("2")),
        (version("1"), version("2", rollout=CANARY)),
        (version("1"), None),
    ],
    ids=["create", "version-change", "canary", "destroy"],
)
def test_a_crash_between_any_two_actions_leaves_a_state_the_next_apply_converges_from(
    world: World, before: DesiredEndpoint | None, after: DesiredEndpoint | None
) -> None:
    start = (before,) if before else ()
    wanted = (after,) if after else ()
    world.gateway.figures = lambda ep, key, table: {"requests": 50, "errors": 0}
    if start:
        world.apply(*start)
    steps = len(world.plan(*wanted).actions)
    assert steps >= 1
    for k in range(1, steps + 1):
        reset_worlds()
        reset_gateways()
        world.runtime.stop()
        for path in world.folder.joinpath("state").glob("*"):
            path.unlink()
        world.events.clear()
        if start:
            assert world.apply(*start).ok
        with pytest.raises(Crash):
            world.apply(*wanted, hooks=_crash_at(k), destroy=after is None)
        world.state()  # readable, whatever the crash interrupted
        assert not any(isinstance(e, UndoStep) for e in world.events)  # no undo on a crash
        result = world.apply(*wanted, destroy=after is None)
        assert result.ok, (k, result)
        world.converged(*wanted)
        if after is None:
            assert world.provider.alive_ids() == () and not world.gateway.running


# -- the registry ------------------------------------------------------------------------------


def test_every_kind_has_a_handler_for_its_own_payload_type() -> None:
    assert set(HANDLERS) == set(ActionKind) == set(PAYLOAD_TYPES)
    assert all(t.KIND is kind for kind, t in PAYLOAD_TYPES.items())


def test_a_payload_of_the_wrong_type_is_refused(world: World) -> None:
    from declare.apply.context import ApplyContext
    from declare.apply.ledger import Ledger
    from declare.plan.actions import Action, StopGateway

    project = world.project()
    plan = Plan(changes=(), actions=(), edges=())
    ledger = Ledger(project.backend, State(), project.gateway, "fake")
    ctx = ApplyContext(project, plan, ledger, lambda e: None)
    with pytest.raises(TypeError, match="is not a"):
        HANDLERS[ActionKind.BUILD](ctx, Action("x", None, "x", StopGateway()))


def test_events_come_in_order_and_say_how_long(world: World) -> None:
    world.apply(version("1"))
    kinds = [type(e) for e in world.events]
    assert kinds[0] is ActionStarted and kinds[-1] is ActionFinished
    starts = [e for e in world.events if isinstance(e, ActionStarted)]
    finishes = [e for e in world.events if isinstance(e, ActionFinished)]
    assert [s.action.id for s in starts] == [f.action.id for f in finishes]
