"""Unit tests of what the gateway gives the runtime: `hold_seconds` in the table, passive
ejection, demand counts and their long poll, and the queue of held requests (in one event
loop, with a pick that takes the first replica not excluded)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

from declare.gateway.balance import CompiledEndpoint
from declare.gateway.demand import MAX_WAIT_SECONDS, DemandBoard, EntityDemand, parse_wait
from declare.gateway.eject import Ejections
from declare.gateway.hold import HoldQueue, Picked
from declare.gateway.state import GatewayState
from declare.gateway.table import ReplicaTarget, RoutingTable


def table(
    replicas: dict[str, list[str]], hold: float | None = None, version: int = 1
) -> RoutingTable:
    ep: dict[str, Any] = {
        "routes": [
            {"served_entity_name": name, "traffic_percentage": 100 // len(replicas)}
            for name in replicas
        ],
        "entities": {
            name: {"replicas": [{"id": r, "url": f"http://127.0.0.1:1/{r}"} for r in ids]}
            for name, ids in replicas.items()
        },
    }
    if hold is not None:
        ep["hold_seconds"] = hold
    return RoutingTable.from_json({"version": version, "endpoints": {"ep": ep}})


# -- the table ---------------------------------------------------------------------------


def test_hold_seconds_round_trips_and_is_omitted_at_zero() -> None:
    held = table({"a": ["r"]}, hold=2.5)
    assert held.endpoints["ep"].hold_seconds == 2.5
    assert held.to_json()["endpoints"]["ep"]["hold_seconds"] == 2.5
    assert RoutingTable.from_json(held.to_json()) == held
    plain = table({"a": ["r"]})
    assert plain.endpoints["ep"].hold_seconds == 0.0
    assert "hold_seconds" not in plain.to_json()["endpoints"]["ep"]
    assert table({"a": ["r"]}, hold=0).to_json() == plain.to_json()
    assert RoutingTable.from_json(plain.to_json()) == plain


@pytest.mark.parametrize("bad", [-1, -0.5, "5", True, float("nan"), float("inf"), [1]])
def test_a_negative_or_non_numeric_hold_is_refused(bad: Any) -> None:
    data = table({"a": ["r"]}).to_json()
    data["endpoints"]["ep"]["hold_seconds"] = bad
    with pytest.raises(ValueError, match=r"endpoints\.ep\.hold_seconds must be a number >= 0"):
        RoutingTable.from_json(data)


# -- ejection ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_ejected_replica_is_skipped_until_its_time_is_up() -> None:
    clock = Clock()
    ejections = Ejections(2.0, clock)
    assert ejections.active() == frozenset() and not ejections.until
    assert ejections.eject("dead")
    assert ejections.excluding(frozenset()) == {"dead"}
    assert ejections.excluding(frozenset({"x"})) == {"dead", "x"}
    assert ejections.retry_at(["dead", "live"]) == 102.0
    assert ejections.retry_at(["live"]) is None
    clock.now = 101.0
    ejections.eject("other")
    clock.now = 101.99
    assert ejections.active() == {"dead", "other"}
    clock.now = 102.0
    assert ejections.active() == {"other"}
    assert "dead" not in ejections.until
    clock.now = 103.5
    assert ejections.active() == frozenset() and not ejections.until


def test_ejection_is_off_at_zero_seconds() -> None:
    ejections = Ejections(0.0)
    assert ejections.eject("dead") is False
    assert not ejections.until and ejections.active() == frozenset()


# -- demand ------------------------------------------------------------------------------


def test_demand_lists_every_entity_of_the_table_and_resets_peaks_on_read() -> None:
    state = GatewayState(eject_seconds=5.0)
    state.set_table(table({"a": ["a-0", "a-1"], "b": []}, hold=3))
    a = state.demand.get("ep", "a")
    a.inflight, a.held, a.peak, a.last_request_at = 2, 1, 7, 123.5
    state.ejections.eject("a-1")
    state.ejections.eject("elsewhere")
    report = state.demand.report(state.live.compiled, state.ejections.active())
    assert report["table_version"] == 1 and report["now"] == pytest.approx(time.time(), abs=5)
    assert report["endpoints"] == {
        "ep": {
            "hold_seconds": 3.0,
            "entities": {
                "a": {
                    "inflight": 2,
                    "held": 1,
                    "peak": 7,
                    "last_request_at": 123.5,
                    "ejected": ["a-1"],
                },
                "b": {"inflight": 0, "held": 0, "peak": 0, "last_request_at": None, "ejected": []},
            },
        }
    }
    assert a.peak == 3  # restarted at inflight + held
    again = state.demand.report(state.live.compiled, frozenset())
    assert again["endpoints"]["ep"]["entities"]["a"]["peak"] == 3


def test_an_old_entity_with_requests_unfinished_stays_in_the_report() -> None:
    state = GatewayState()
    state.set_table(table({"old": ["o"]}))
    state.demand.get("ep", "old").inflight = 1
    state.demand.get("ep", "idle-old")
    state.set_table(table({"new": ["n"]}, version=2))
    entities = state.demand.report(state.live.compiled, frozenset())["endpoints"]["ep"]["entities"]
    assert set(entities) == {"new", "old"}
    assert entities["old"]["inflight"] == 1


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 0.0), ("", 0.0), ("0", 0.0), ("2.5", 2.5), ("30", 30.0)]
)
def test_wait_parses(raw: str | None, expected: float) -> None:
    assert parse_wait(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "31", "soon", "nan"])
def test_wait_refuses_what_is_not_0_to_30_seconds(raw: str) -> None:
    problem = parse_wait(raw)
    assert isinstance(problem, str) and f"0 to {MAX_WAIT_SECONDS:g}" in problem


def test_wait_returns_on_notify_or_after_its_time() -> None:
    async def scenario() -> tuple[float, float, float]:
        board = DemandBoard()
        compiled = GatewayState().live.compiled
        started = time.monotonic()
        await board.wait(0.2)  # nothing happens
        timed_out = time.monotonic() - started
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, board.notify)
        started = time.monotonic()
        await board.wait(5)
        notified = time.monotonic() - started
        # Not reported yet: the next wait answers at once; after a report it waits again.
        started = time.monotonic()
        await board.wait(5)
        pending = time.monotonic() - started
        board.report(compiled, frozenset())
        started = time.monotonic()
        await board.wait(0.1)
        assert time.monotonic() - started >= 0.09
        return timed_out, notified, pending

    timed_out, notified, pending = asyncio.run(scenario())
    assert 0.19 <= timed_out < 1.0
    assert 0.04 <= notified < 1.0
    assert pending < 0.05


# -- the hold queue ----------------------------------------------------------------------


def first_free(
    endpoint: CompiledEndpoint, entity: str, demand: EntityDemand, exclude: frozenset[str]
) -> ReplicaTarget | None:
    return next((r for r in endpoint.replicas(entity) if r.id not in exclude), None)


def test_a_held_request_gets_the_replica_a_push_brings() -> None:
    async def scenario() -> tuple[Picked | web.Response, float, int, int]:
        state = GatewayState()
        state.set_table(table({"a": []}, hold=5))
        holds = HoldQueue(state, first_free, 10, {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, state.set_table, table({"a": ["a-0"]}, hold=5, version=2))
        started = time.monotonic()
        task = asyncio.ensure_future(holds.hold("ep", "a", 5))
        await asyncio.sleep(0.02)
        held_now, peak = state.demand.get("ep", "a").held, state.demand.get("ep", "a").peak
        result = await task
        assert state.demand.get("ep", "a").held == 0 and holds.held == {}
        return result, time.monotonic() - started, held_now, peak

    result, waited, held_now, peak = asyncio.run(scenario())
    assert isinstance(result, Picked)
    assert result.replica.id == "a-0" and result.entity == "a" and result.live.table.version == 2
    assert 0.09 <= waited < 0.5
    assert held_now == 1 and peak == 1


def test_a_held_request_times_out_and_the_queue_is_bounded() -> None:
    async def scenario() -> list[Picked | web.Response]:
        state = GatewayState()
        state.set_table(table({"a": []}, hold=0.2))
        holds = HoldQueue(state, first_free, 2, {"Retry-After": "1"})
        results = await asyncio.gather(*(holds.hold("ep", "a", 0.2) for _ in range(3)))
        assert holds.held == {} and state.demand.get("ep", "a").held == 0
        return list(results)

    results = asyncio.run(scenario())
    assert all(isinstance(r, web.Response) and r.status == 503 for r in results)
    texts = [r.text for r in results if isinstance(r, web.Response)]
    assert sum("hold queue is full" in (t or "") for t in texts) == 1
    assert sum("the request waited 0." in (t or "") for t in texts) == 2
    assert all("'a' of endpoint 'ep'" in (t or "") for t in texts)


def test_an_abandoned_held_request_gives_its_counts_back() -> None:
    async def scenario() -> tuple[int, int]:
        state = GatewayState()
        state.set_table(table({"a": []}, hold=30))
        holds = HoldQueue(state, first_free, 10, {"Retry-After": "1"})
        task = asyncio.ensure_future(holds.hold("ep", "a", 30))
        await asyncio.sleep(0.02)
        during = state.demand.get("ep", "a").held
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return during, state.demand.get("ep", "a").held + sum(holds.held.values())

    assert asyncio.run(scenario()) == (1, 0)


def test_a_held_request_moves_to_the_entity_a_push_routes_instead() -> None:
    async def scenario() -> tuple[Picked | web.Response, int, int]:
        state = GatewayState()
        state.set_table(table({"old": []}, hold=5))
        holds = HoldQueue(state, first_free, 10, {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, state.set_table, table({"new": ["n-0"]}, hold=5, version=2))
        result = await holds.hold("ep", "old", 5)
        return result, state.demand.get("ep", "old").held, state.demand.get("ep", "new").held

    result, old_held, new_held = asyncio.run(scenario())
    assert isinstance(result, Picked) and result.entity == "new" and result.replica.id == "n-0"
    assert (old_held, new_held) == (0, 0)


def test_a_held_request_wakes_when_an_ejection_ends() -> None:
    async def scenario() -> tuple[Picked | web.Response, float]:
        state = GatewayState(eject_seconds=0.15)
        state.set_table(table({"a": ["a-0"]}, hold=5))
        state.ejections.eject("a-0")

        def not_ejected(
            endpoint: CompiledEndpoint, entity: str, demand: EntityDemand, exclude: frozenset[str]
        ) -> ReplicaTarget | None:
            return first_free(endpoint, entity, demand, exclude | state.ejections.active())

        holds = HoldQueue(state, not_ejected, 10, {"Retry-After": "1"})
        started = time.monotonic()
        result = await holds.hold("ep", "a", 5)
        return result, time.monotonic() - started

    result, waited = asyncio.run(scenario())
    assert isinstance(result, Picked) and result.replica.id == "a-0"
    assert 0.1 <= waited < 0.6


# -- the kept table: a gateway started again routes as before ------------------------------


def test_a_gateway_started_again_loads_the_table_pushed_last(tmp_path: Any) -> None:
    from declare.gateway.admin import keep_table
    from declare.gateway.config import GatewayConfig
    from declare.gateway.server import Gateway

    path = tmp_path / "table.json"
    pushed = table({"a": ["r1", "r2"]}, hold=5, version=7)
    keep_table(path, pushed.to_json())
    gateway = Gateway(GatewayConfig(admin_token="t", table_file=path))
    assert gateway.table.version == 7
    assert gateway.table.endpoints["ep"].hold_seconds == 5
    assert [r.id for r in gateway.table.endpoints["ep"].entities["a"]] == ["r1", "r2"]


def test_a_kept_table_that_does_not_parse_is_not_used(tmp_path: Any) -> None:
    from declare.gateway.config import GatewayConfig
    from declare.gateway.server import Gateway

    path = tmp_path / "table.json"
    path.write_text("{not json")
    assert Gateway(GatewayConfig(admin_token="t", table_file=path)).table.endpoints == {}
    assert Gateway(GatewayConfig(admin_token="t")).table.endpoints == {}
