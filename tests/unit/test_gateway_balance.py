"""Unit tests of the gateway's balancing (entity and replica choice), table validation,
descriptions, metrics and shared state."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from declare.gateway.balance import (
    compile_endpoint,
    endpoint_ready,
    fallback_entities,
    pick_entity,
    pick_replica,
)
from declare.gateway.dataplane import json_problem
from declare.gateway.metrics import Metrics, percentile
from declare.gateway.server import describe_endpoint
from declare.gateway.state import GatewayState
from declare.gateway.table import EndpointTable, ReplicaTarget, RoutingTable


def endpoint(routes: list[tuple[str, int]], replicas: dict[str, int]) -> EndpointTable:
    return EndpointTable(
        "ep",
        tuple(routes),
        {
            name: tuple(
                ReplicaTarget(f"{name}-{i}", f"http://127.0.0.1:{9000 + i}") for i in range(n)
            )
            for name, n in replicas.items()
        },
    )


@pytest.mark.parametrize("split", [(90, 10), (50, 50), (1, 99), (70, 20, 10)])
def test_weighted_choice_honours_percentages(split: tuple[int, ...]) -> None:
    names = [f"e{i}" for i in range(len(split))]
    compiled = compile_endpoint(endpoint(list(zip(names, split, strict=True)), {}))
    rng = random.Random(1234)
    draws = 50_000
    counts = Counter(pick_entity(compiled, rng.random()) for _ in range(draws))
    for name, pct in zip(names, split, strict=True):
        p = pct / 100
        sd = (draws * p * (1 - p)) ** 0.5
        assert abs(counts[name] - draws * p) < 5 * sd + 1, (name, counts)


def test_zero_percent_entity_never_chosen() -> None:
    compiled = compile_endpoint(endpoint([("old", 100), ("new", 0)], {"old": 1, "new": 1}))
    picks = {pick_entity(compiled, x / 1000) for x in range(1000)}
    assert picks == {"old"}
    assert pick_entity(compiled, 0.999999) == "old"


def test_endpoint_without_routes_spreads_over_entities_or_routes_nowhere() -> None:
    even = compile_endpoint(endpoint([], {"a": 1, "b": 1}))
    assert {pick_entity(even, 0.1), pick_entity(even, 0.9)} == {"a", "b"}
    assert pick_entity(compile_endpoint(endpoint([], {})), 0.5) is None


def test_least_inflight_replica_wins() -> None:
    replicas = endpoint([], {"a": 3}).entities["a"]
    inflight = {"a-0": 4, "a-1": 1, "a-2": 2}
    for cursor in range(6):
        chosen = pick_replica(replicas, inflight, cursor)
        assert chosen is not None and chosen.id == "a-1"


def test_ties_are_broken_round_robin() -> None:
    replicas = endpoint([], {"a": 3}).entities["a"]
    chosen = [pick_replica(replicas, {}, cursor) for cursor in range(9)]
    assert Counter(r.id for r in chosen if r) == {"a-0": 3, "a-1": 3, "a-2": 3}
    assert [r.id for r in chosen[:3] if r] == ["a-0", "a-1", "a-2"]


def test_excluded_and_missing_replicas() -> None:
    replicas = endpoint([], {"a": 2}).entities["a"]
    chosen = pick_replica(replicas, {"a-1": 9}, 0, exclude=frozenset({"a-0"}))
    assert chosen is not None and chosen.id == "a-1"
    assert pick_replica(replicas, {}, 0, exclude=frozenset({"a-0", "a-1"})) is None
    assert pick_replica((), {}, 0) is None


def test_retry_prefers_same_entity_then_routed_others_by_share() -> None:
    compiled = compile_endpoint(
        endpoint([("a", 10), ("b", 60), ("c", 30), ("z", 0)], {"a": 1, "b": 1, "c": 1, "z": 1})
    )
    assert fallback_entities(compiled, "a") == ["a", "b", "c"]


def test_readiness_is_derived_from_routed_entities() -> None:
    assert endpoint_ready(endpoint([("a", 100)], {"a": 1}))
    assert not endpoint_ready(endpoint([("a", 50), ("b", 50)], {"a": 1, "b": 0}))
    assert endpoint_ready(endpoint([("a", 100), ("b", 0)], {"a": 1, "b": 0}))
    assert not endpoint_ready(endpoint([], {}))


def test_description_defaults_and_passthrough() -> None:
    bare = endpoint([("a", 100)], {"a": 0})
    assert describe_endpoint(bare) == {
        "name": "ep",
        "state": {"ready": "NOT_READY", "config_update": "NOT_UPDATING"},
    }
    given = EndpointTable(
        "ep",
        (("a", 100),),
        {},
        {"name": "ep", "state": {"ready": "READY", "config_update": "IN_PROGRESS"}, "tags": []},
    )
    assert describe_endpoint(given)["state"] == {"ready": "READY", "config_update": "IN_PROGRESS"}


def table_json(**endpoint_fields: Any) -> dict[str, Any]:
    ep = {
        "routes": [{"served_entity_name": "a", "traffic_percentage": 100}],
        "entities": {"a": {"replicas": [{"id": "r", "url": "http://127.0.0.1:1"}]}},
    }
    ep.update(endpoint_fields)
    return {"version": 2, "endpoints": {"ep": ep}}


def test_table_round_trips_through_json() -> None:
    table = RoutingTable.from_json(table_json(description={"name": "ep"}))
    assert RoutingTable.from_json(table.to_json()) == table
    assert table.endpoints["ep"].entities["a"] == (ReplicaTarget("r", "http://127.0.0.1:1"),)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({"version": "7"}, "version must be an integer"),
        ({"endpoints": []}, "endpoints must be an object"),
        (table_json(routes=[{"served_entity_name": "a", "traffic_percentage": 60}]), "sum to 100"),
        (table_json(routes=[{"traffic_percentage": 100}]), "routes[0] is malformed"),
        (table_json(entities={"a": {"replicas": [{"id": "r"}]}}), "entities.a is malformed"),
        (table_json(description=[1]), "description must be an object"),
        (table_json(entities=[1]), "entities must be an object"),
        (table_json(hold_seconds=-1), "hold_seconds must be a number >= 0, got -1"),
    ],
)
def test_invalid_tables_are_rejected_with_what_is_wrong(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RoutingTable.from_json(data)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_metrics_window_totals_and_bounded_ring() -> None:
    metrics = Metrics(capacity=10)
    for i in range(15):
        metrics.record("ep", "a", latency_ms=float(i), error=i % 5 == 0)
    metrics.record("ep", None, latency_ms=1.0, error=False)  # rejected before routing
    metrics.record_connection_failure("ep", "a")
    report = metrics.report(None)["endpoints"]["ep"]
    assert report["requests"] == 10  # the ring keeps the last 10 samples
    assert report["total_requests"] == 16 and report["total_errors"] == 3
    entity = report["entities"]["a"]
    assert entity["requests"] == 9 and entity["errors"] == 1  # sample 10 is in the window
    assert entity["total_requests"] == 15 and entity["total_connection_failures"] == 1
    assert entity["p50_ms"] == 10.0
    future = metrics.report(since=1e12)["endpoints"]["ep"]
    assert future["requests"] == 0 and future["p50_ms"] is None
    assert future["total_requests"] == 16


def test_shared_state_swaps_the_table_and_forgets_what_it_no_longer_routes() -> None:
    state = GatewayState(metrics_capacity=10)
    assert state.table.version == 0 and not state.live.urls
    state.set_table(RoutingTable.from_json(table_json()))
    before = state.live
    assert state.table.version == 2
    assert str(before.urls["r"]) == "http://127.0.0.1:1/invocations"
    assert before.served["r"] == "a"
    state.demand.get("ep", "a").cursor = 5
    state.demand.get("gone", "x").cursor = 3
    state.demand.get("gone", "busy").inflight = 1  # a request still on an old entity
    inflight, metrics, limiter = state.inflight, state.metrics, state.limiter
    demand, ejections = state.demand, state.ejections
    state.set_table(RoutingTable.from_json(table_json()))
    assert state.live is not before and before.urls["r"]  # a request keeps its old table
    assert set(state.demand.entities) == {("ep", "a"), ("gone", "busy")}
    assert state.demand.entities[("ep", "a")].cursor == 5
    assert state.inflight is inflight and state.metrics is metrics and state.limiter is limiter
    assert state.demand is demand and state.ejections is ejections


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"inputs": [1]}', None),
        (b"", "the request body is empty"),
        (b"{nope", "the request body is not valid JSON"),
        (b"\xff\xfe", "not valid"),
        (b"[1, 2]", "must be a JSON object (with dataframe_split"),
        (b'"s"', "not a string"),
    ],
)
def test_json_bodies_must_be_objects(body: bytes, problem: str | None) -> None:
    found = json_problem(body)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
