"""diff(): what changed between manifests, state and what runs (pure)."""

from __future__ import annotations

from dataclasses import replace

from declare.diff import Actual, Change, Impact, diff
from declare.gateway.table import RoutingTable
from declare.provider import Liveness, ReplicaStatus
from declare.state.document import State
from tests.unit.planning_fixtures import applied, desired


def test_new_endpoint_is_created_with_one_replica_per_small_entity() -> None:
    (change,) = diff([desired(("1", 100))], State(), Actual())
    assert change.kind is Change.CREATE
    assert [(s.entity.name, s.index) for s in change.starts] == [("iris-1", 0)]
    assert change.route_push


def test_applied_endpoint_with_everything_running_is_a_noop() -> None:
    d = desired(("1", 100))
    state, actual = applied(d)
    (change,) = diff([d], state, actual, "gw")
    assert change.kind is Change.NOOP
    assert not change.starts and not change.stops and not change.route_push


def test_version_change_starts_new_replicas_and_retires_old() -> None:
    state, actual = applied(desired(("1", 100)))
    (change,) = diff([desired(("2", 100))], state, actual, "gw")
    assert change.kind is Change.UPDATE
    assert [s.entity.name for s in change.starts] == ["iris-2"]
    assert [h.id for h in change.stops] == ["iris-iris-1-0"]
    paths = {f.path: f.impact for f in change.fields}
    assert paths["served_entities[iris-2]"] is Impact.REPLACE
    assert paths["served_entities[iris-1]"] is Impact.REPLACE


def test_traffic_only_change_restarts_nothing() -> None:
    state, actual = applied(desired(("1", 50), ("2", 50)))
    (change,) = diff([desired(("1", 90), ("2", 10))], state, actual, "gw")
    assert change.kind is Change.UPDATE
    assert not change.starts and not change.stops
    assert [(f.path, f.impact) for f in change.fields] == [("traffic_config.routes", Impact.LIVE)]


def test_scale_up_adds_replicas_of_the_same_generation() -> None:
    state, actual = applied(desired(("1", 100)))
    (change,) = diff([desired(("1", 100), size="Medium")], state, actual, "gw")
    assert [(s.index, s.reason) for s in change.starts] == [(1, "scale up")]
    assert not change.stops
    assert any(f.impact is Impact.SCALE for f in change.fields)


def test_dead_replica_is_drift_and_is_replaced() -> None:
    d = desired(("1", 100))
    state, actual = applied(d, alive=False)
    (change,) = diff([d], state, actual, "gw")
    assert change.kind is Change.UPDATE
    assert [s.reason for s in change.starts] == ["replaces iris-iris-1-0"]
    assert [h.id for h in change.forgets] == ["iris-iris-1-0"]
    assert change.drift and "exited 1" in change.drift[0]


def test_gateway_down_means_routes_are_pushed_again() -> None:
    d = desired(("1", 100))
    state, actual = applied(d)
    actual = replace(actual, gateway_running=False, gateway_table=None)
    (change,) = diff([d], state, actual, "gw")
    assert change.kind is Change.UPDATE and change.route_push and not change.starts


def test_gateway_that_lost_its_table_is_drift() -> None:
    d = desired(("1", 100))
    state, actual = applied(d)
    actual = replace(actual, gateway_table=RoutingTable.empty())
    (change,) = diff([d], state, actual, "gw")
    assert change.kind is Change.UPDATE
    assert any("does not route" in x for x in change.drift)


def test_endpoint_gone_from_manifests_is_deleted() -> None:
    state, actual = applied(desired(("1", 100)))
    (change,) = diff([], state, actual, "gw")
    assert change.kind is Change.DELETE
    assert [h.id for h in change.stops] == ["iris-iris-1-0"]


def test_failed_update_is_proposed_again() -> None:
    state, actual = applied(desired(("1", 100)))
    rec = replace(state.endpoints["iris"], config_update="UPDATE_FAILED", message="boom")
    state = state.with_endpoint(rec)
    (change,) = diff([desired(("2", 100))], state, actual, "gw")
    assert change.kind is Change.UPDATE and [s.entity.name for s in change.starts] == ["iris-2"]


def test_replica_started_but_never_ready_is_stopped_and_restarted() -> None:
    d = desired(("1", 100))
    state, actual = applied(d)
    rec = state.endpoints["iris"]
    rec = replace(rec, replicas=tuple(replace(r, ready=False) for r in rec.replicas))
    state = state.with_endpoint(rec)
    actual = replace(
        actual,
        replicas={r.id: ReplicaStatus(r.handle, Liveness.ALIVE) for r in rec.replicas},
    )
    (change,) = diff([d], state, actual, "gw")
    assert [h.id for h in change.stops] == ["iris-iris-1-0"]
    assert len(change.starts) == 1
