"""The runtime's ticks on the fake provider and an in-memory gateway and clock: a dead
replica replaced and recorded with why, a crash loop backed off, scale up on demand, down
after a quiet period, to zero and awake, a dead gateway started again, and nothing done
while an apply holds the lock."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

from declare.describe import describe
from declare.gateway.table import RoutingTable
from declare.model import AutoscalePolicy
from declare.runtime.loop import Runtime
from tests.unit.fake_world import World, version


def runtime(world: World) -> Runtime:
    return Runtime(world.project(), io.StringIO())


def alive_of(world: World, entity: str = "iris-1") -> list[str]:
    return [rid for rid in world.provider.alive_ids() if rid.startswith(f"iris-{entity}")]


def demand(peak: int, held: int = 0) -> Any:
    def figures(ep: str, key: str, table: RoutingTable) -> dict[str, Any]:
        return {"inflight": peak - held, "held": held, "peak": peak, "last_request_at": None}

    return figures


def test_a_dead_replica_is_replaced_without_an_apply_and_recorded(world: World) -> None:
    world.apply(version("1"))
    world.clock.sleep(120)  # a replica that ran a while: a death, not a crash loop
    (old,) = world.provider.alive_ids()
    world.provider.kill(old, "killed by SIGKILL")
    rt = runtime(world)
    assert rt.tick()
    (new,) = world.provider.alive_ids()
    assert new != old
    ep = world.state().endpoints["iris"]
    assert [r.id for r in ep.replicas] == [new] and ep.replicas[0].ready
    assert world.routed() == {"iris-1": 100}
    assert world.gateway.table.endpoints["iris"].entities["iris-1"][0].id == new
    (event,) = ep.events
    assert event.kind == "replace" and old in event.detail and "killed by SIGKILL" in event.detail
    assert ep.config_update == "NOT_UPDATING" and ep.config_version == 1  # no config change
    assert not rt.tick()  # nothing left to do
    world.converged(version("1"))


def test_a_replica_that_keeps_dying_is_backed_off_and_reported(world: World) -> None:
    world.apply(version("1"))
    rt = runtime(world)
    failures = []
    for _ in range(4):
        (rid,) = world.provider.alive_ids()
        world.provider.kill(rid, "segfault at start")  # dies right after its start
        rt.tick()
        scale = world.state().endpoints["iris"].scale["iris-1"]
        failures.append(scale.failures)
        world.clock.sleep(scale.backoff_until - world.clock.time() if scale.backoff_until else 0)
        rt.tick()  # the replacement after the backoff
    assert failures == [1, 2, 3, 4]
    scale = world.state().endpoints["iris"].scale["iris-1"]
    assert scale.backoff_until is not None and "segfault at start" in scale.last_failure
    # while backing off, nothing is started
    (rid,) = world.provider.alive_ids()
    world.provider.kill(rid, "segfault at start")
    rt.tick()
    assert world.provider.alive_ids() == ()
    state = describe(world.state().endpoints["iris"])["config"]["served_entities"][0]["state"]
    assert state["deployment"] == "DEPLOYMENT_RECOVERING"
    assert "crash loop: 5 failures in a row" in state["deployment_state_message"]
    # a replica that stays up ends the loop
    world.clock.sleep(400)
    rt.tick()
    world.clock.sleep(60)
    rt.tick()
    scale = world.state().endpoints["iris"].scale["iris-1"]
    assert scale.failures == 0 and len(world.provider.alive_ids()) == 1


def test_demand_scales_up_at_once_and_down_after_a_quiet_period(world: World) -> None:
    medium = version("1", size="Medium")  # 8-16 concurrent: 2..4 replicas
    world.apply(medium)
    assert len(world.provider.alive_ids()) == 2
    rt = runtime(world)
    world.gateway.demand = demand(11)
    assert rt.tick()
    assert len(world.provider.alive_ids()) == 3
    scale = world.state().endpoints["iris"].scale["iris-1"]
    assert scale.target == 3 and "11 requests" in scale.reason
    assert len(world.gateway.table.endpoints["iris"].entities["iris-1"]) == 3
    world.converged(medium)  # a count inside the range is not a change for plan
    world.gateway.demand = demand(2)
    for _ in range(29):  # 290 s of quiet: not yet
        world.clock.sleep(10)
        rt.tick()
    assert len(world.provider.alive_ids()) == 3
    for _ in range(3):
        world.clock.sleep(10)
        rt.tick()
    assert len(world.provider.alive_ids()) == 2  # one step down, never below 2
    for _ in range(40):
        world.clock.sleep(10)
        rt.tick()
    assert len(world.provider.alive_ids()) == 2


def test_to_zero_after_idle_and_awake_on_a_held_request(world: World) -> None:
    d = version("1", scale_to_zero_enabled=True)
    d = replace(
        d, spec=replace(d.spec, autoscaling=AutoscalePolicy(scale_to_zero_after_seconds=60))
    )
    world.apply(d)
    rt = runtime(world)
    world.gateway.demand = demand(0)
    for _ in range(7):
        world.clock.sleep(10)
        rt.tick()
    assert world.provider.alive_ids() == ()
    ep = world.state().endpoints["iris"]
    assert ep.scale["iris-1"].target == 0 and ep.scale["iris-1"].zero_since is not None
    desc = describe(ep)
    assert desc["state"]["ready"] == "READY"
    assert (
        "scaled to zero since"
        in (desc["config"]["served_entities"][0]["state"]["deployment_state_message"])
    )
    assert world.gateway.table.endpoints["iris"].entities["iris-1"] == ()  # routed, held
    world.converged(d)
    world.gateway.demand = demand(1, held=1)
    assert rt.tick()
    assert len(world.provider.alive_ids()) == 1
    assert world.state().endpoints["iris"].events[-1].kind in ("wake", "scale")


def test_a_dead_gateway_is_started_again(world: World) -> None:
    world.apply(version("1"))
    world.gateway.running = False
    assert runtime(world).tick()
    assert world.gateway.running and world.routed() == {"iris-1": 100}


def test_nothing_is_done_while_an_apply_holds_the_lock(world: World) -> None:
    world.apply(version("1"))
    (rid,) = world.provider.alive_ids()
    world.provider.kill(rid)
    project = world.project()
    with project.backend.locked("apply", 0):
        assert not runtime(world).tick()
    assert world.provider.alive_ids() == ()
    assert runtime(world).tick()
    assert len(world.provider.alive_ids()) == 1


def test_status_shows_the_range_by_the_providers_replica_concurrency() -> None:
    """Provisioned concurrency 4..12 is 1..3 replicas of 4, and 2..6 of a provider whose
    replicas serve 2 each: status says what the runtime scales within."""
    from declare.views.status import status_json
    from tests.unit.planning_fixtures import applied, desired

    d = desired(("1", 100), size="", min_provisioned_concurrency=4, max_provisioned_concurrency=12)
    state, actual = applied(d)

    def ranges(per_replica: dict[str, int] | None) -> str:
        shown = status_json(state, actual, lambda n: n, None, per_replica)
        return str(shown["endpoints"][0]["declare"]["entities"]["iris-1"]["range"])

    assert ranges(None) == "1..3"
    assert ranges({"iris": 2}) == "2..6"
