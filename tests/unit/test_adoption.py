"""Adoption after a lost state (Terraform's import, done by the refresh), and orphans that
carry traffic stopped only after their endpoint's switch: the pure diff and plan, the
routing kept while an endpoint is created, and whole applies on the fake world."""

from __future__ import annotations

import io
from dataclasses import replace

from declare.diff import Actual, DesiredEndpoint, diff, unadopted
from declare.gateway.table import EndpointTable, ReplicaTarget, RoutingTable
from declare.model import ReplicaHandle
from declare.plan import GatewayInput, PlanInput, build_plan
from declare.plan.actions import ActionKind, Plan
from declare.provider import Liveness, ReplicaStatus
from declare.routing import keeping_served
from declare.runtime.loop import Runtime
from declare.state.document import State
from tests.unit import planning_fixtures as pf
from tests.unit.fake_world import World, version


def _orphan(d: DesiredEndpoint, rid: str, generation: str | None = None) -> ReplicaHandle:
    e = d.spec.entities[0]
    return ReplicaHandle(
        id=rid,
        provider="local",
        endpoint="iris",
        entity=e.name,
        generation=generation if generation is not None else d.generation(e),
        url="http://127.0.0.1:5100",
    )


def _lost(
    d: DesiredEndpoint, *orphans: ReplicaHandle, dead: tuple[str, ...] = (), routed: str = ""
) -> Actual:
    """What a refresh sees once the state is lost: orphans, and the gateway's old table."""
    table = RoutingTable.empty()
    if routed:
        entry = EndpointTable("iris", (("iris-1", 100),), {"iris-1": (ReplicaTarget(routed, "u"),)})
        table = RoutingTable(1, {"iris": entry})
    return Actual(
        replicas={
            h.id: ReplicaStatus(h, Liveness.DEAD if h.id in dead else Liveness.ALIVE, "")
            for h in orphans
        },
        orphans=orphans,
        gateway_running=True,
        gateway_settings_hash="gw",
        gateway_table=table,
        gateway_started_hash="gw",
    )


def _plan(d: DesiredEndpoint, actual: Actual) -> Plan:
    changes = diff([d], State(), actual, "gw")
    return build_plan(
        PlanInput(
            project="p",
            changes=changes,
            gateway=GatewayInput(True, "127.0.0.1", 8787, "gw", "gw", adopt=True),
            orphans=unadopted(actual.orphans, changes),
            routed=actual.routed_ids(),
        )
    )


# -- diff -----------------------------------------------------------------------------------


def test_a_running_replica_that_matches_is_adopted_not_started() -> None:
    d = pf.desired(("1", 100))
    h = _orphan(d, "o1")
    (change,) = diff([d], State(), _lost(d, h, routed="o1"), "gw")
    assert change.starts == () and change.stops == ()
    (adopted,) = change.adopts
    assert adopted.handle == h and adopted.index == 0 and adopted.routed
    assert change.route_push
    assert unadopted((h,), (change,)) == ()


def test_other_generations_dead_ones_and_replace_requests_are_not_adopted() -> None:
    d = pf.desired(("1", 100))
    stale = _orphan(d, "stale", generation="other")
    dead = _orphan(d, "dead")
    (change,) = diff([d], State(), _lost(d, stale, dead, dead=("dead",)), "gw")
    assert change.adopts == () and len(change.starts) == 1
    assert unadopted((stale, dead), (change,)) == (stale, dead)
    forced = diff([d], State(), _lost(d, _orphan(d, "o1")), "gw", frozenset({("iris", "iris-1")}))
    assert forced[0].adopts == () and len(forced[0].starts) == 1


def test_the_routed_orphan_is_adopted_first_and_the_extra_one_stays_an_orphan() -> None:
    d = pf.desired(("1", 100))  # one replica (a pinned count)
    a, b = _orphan(d, "a"), _orphan(d, "b")
    (change,) = diff([d], State(), _lost(d, a, b, routed="b"), "gw")
    assert [x.handle.id for x in change.adopts] == ["b"]
    assert unadopted((a, b), (change,)) == (a,)


def test_adoption_fills_only_the_slots_the_state_leaves_free() -> None:
    d = pf.desired(("1", 100))
    state, actual = pf.applied(d)
    extra = _orphan(d, "extra")
    actual = replace(
        actual,
        orphans=(extra,),
        replicas={**actual.replicas, "extra": ReplicaStatus(extra, Liveness.ALIVE, "")},
    )
    (change,) = diff([d], state, actual, "gw")
    assert change.adopts == () and change.starts == ()
    assert unadopted((extra,), (change,)) == (extra,)


# -- plan -----------------------------------------------------------------------------------


def _index(plan: Plan, action_id: str) -> int:
    return [a.id for a in plan.actions].index(action_id)


def test_the_plan_adopts_the_gateway_and_the_replica_then_routes() -> None:
    d = pf.desired(("1", 100))
    plan = _plan(d, _lost(d, _orphan(d, "o1"), routed="o1"))
    kinds = [a.kind for a in plan.actions]
    assert kinds == [
        ActionKind.ADOPT_GATEWAY,
        ActionKind.ADOPT_REPLICA,
        ActionKind.AWAIT_READY,
        ActionKind.SET_ROUTES,
    ]
    adopt = plan.action("endpoint.iris.entity[iris-1].replica[0].adopt")
    assert "adopt replica o1" in adopt.summary and "matches the manifest" in adopt.summary
    assert adopt.kind.symbol == "~"
    assert ("endpoint.iris.entity[iris-1].replica[0].ready", "endpoint.iris.routes") in plan.edges


def test_an_orphan_of_a_routed_endpoint_drains_and_stops_after_the_switch() -> None:
    d = pf.desired(("2", 100))
    old = _orphan(pf.desired(("1", 100)), "old")
    plan = _plan(d, _lost(d, old, routed="old"))
    routes = _index(plan, "endpoint.iris.routes")
    assert routes < _index(plan, "orphan[old].drain") < _index(plan, "orphan[old].stop")
    assert _index(plan, "endpoint.iris.entity[iris-2].replica[0].ready") < routes
    assert ("endpoint.iris.routes", "orphan[old].drain") in plan.edges
    assert "the gateway routes it now" in plan.action("orphan[old].stop").summary


def test_an_orphan_of_an_endpoint_not_declared_is_stopped_at_once() -> None:
    d = pf.desired(("1", 100))
    stray = replace(_orphan(d, "stray"), endpoint="gone")
    plan = _plan(d, _lost(d, stray))
    assert "orphan[stray].drain" not in {a.id for a in plan.actions}
    assert not any(b == "orphan[stray].stop" for _, b in plan.edges)


# -- routing kept while an endpoint is created -----------------------------------------------


def test_an_endpoint_being_created_keeps_the_gateways_entry_until_it_is_routed() -> None:
    live_entry = EndpointTable("iris", (("iris-1", 100),), {"iris-1": (ReplicaTarget("o", "u"),)})
    live = RoutingTable(1, {"iris": live_entry})
    empty = RoutingTable(2, {"iris": EndpointTable("iris", (), {})})
    assert keeping_served(empty, live, frozenset({"iris"})).endpoints["iris"] == live_entry
    assert keeping_served(empty, live, frozenset()).endpoints["iris"].routes == ()
    routed = RoutingTable(3, {"iris": replace(live_entry, entities={"iris-1": ()})})
    assert keeping_served(routed, live, frozenset({"iris"})) == routed
    nothing = RoutingTable(1, {"iris": replace(live_entry, entities={"iris-1": ()})})
    assert keeping_served(empty, nothing, frozenset({"iris"})) == empty


# -- whole applies on the fake world --------------------------------------------------------


def _lose_state(world: World) -> None:
    for path in world.project().config.state_dir.glob("declare.tfstate.json*"):
        path.unlink()
    assert world.state().endpoints == {}


def test_a_lost_state_is_rebuilt_from_what_runs_without_a_stop(world: World) -> None:
    assert world.apply(version("1")).ok
    before = world.provider.alive_ids()
    _lose_state(world)
    pushed = len(world.gateway.tables)
    plan = world.plan(version("1"))
    assert ActionKind.START_REPLICA not in {a.kind for a in plan.actions}
    assert ActionKind.STOP_GATEWAY not in {a.kind for a in plan.actions}
    assert world.apply(version("1")).ok
    assert world.provider.alive_ids() == before
    assert world.gateway.starts == 1
    for table in world.gateway.tables[pushed:]:  # never routed to nothing meanwhile
        assert any(table.endpoints["iris"].entities.values())
    (replica,) = world.state().endpoints["iris"].replicas
    assert replica.id in before and replica.ready and not replica.retired
    assert world.state().gateway is not None
    world.converged(version("1"))


def test_a_lost_state_and_a_new_version_switch_before_the_orphan_stops(world: World) -> None:
    assert world.apply(version("1")).ok
    (old,) = world.provider.alive_ids()
    _lose_state(world)
    pushed = len(world.gateway.tables)
    assert world.apply(version("2")).ok
    for table in world.gateway.tables[pushed:]:
        assert any(table.endpoints["iris"].entities.values())
    assert old not in world.provider.alive_ids()
    assert world.routed() == {"iris-2": 100}
    world.converged(version("2"))


def test_the_runtime_stops_nothing_when_it_finds_the_state_lost(world: World) -> None:
    assert world.apply(version("1")).ok
    before = world.provider.alive_ids()
    _lose_state(world)
    runtime = Runtime(world.project(), io.StringIO())
    assert not runtime.tick()  # nothing of its own to do: the gateway and replica run on
    assert world.gateway.running and world.provider.alive_ids() == before
    assert world.apply(version("1")).ok  # and apply adopts them
    assert world.provider.alive_ids() == before
    world.converged(version("1"))
