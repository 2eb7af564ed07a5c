"""Unit tests of a shadow step's gateway side: the table's `shadow` target, the sampling,
the mirrors (with a fake candidate in place of the pool), their figures and captured rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from yarl import URL

from declare.gateway.capture.buffer import CaptureBuffer, Captured
from declare.gateway.capture.rows import build_rows, metadata
from declare.gateway.exposition import GatewayCollector, render
from declare.gateway.metrics import Metrics, ShadowSample
from declare.gateway.pool import Answer, ConnectError
from declare.gateway.shadow import Exchange, Shadow, ShadowSampler
from declare.gateway.state import GatewayState
from declare.gateway.table import (
    EndpointTable,
    ReplicaTarget,
    RoutingTable,
    ServedModel,
    ShadowTarget,
)
from declare.model.capture import CaptureTarget

CAPTURE = CaptureTarget("ml", "serving", "iris")


def shadow_json(**extra: Any) -> dict[str, Any]:
    return {
        "key": "iris-2@ab12cd34",
        "served_name": "iris-2",
        "percent": 50,
        "tolerance": 1e-6,
        "replicas": [{"id": "c-1", "url": "http://127.0.0.1:9101"}],
        **extra,
    }


def table_json(shadow: Any = None) -> dict[str, Any]:
    endpoint: dict[str, Any] = {
        "routes": [{"served_entity_name": "iris-1", "traffic_percentage": 100}],
        "entities": {"iris-1": {"replicas": [{"id": "s-1", "url": "http://127.0.0.1:9001"}]}},
    }
    if shadow is not None:
        endpoint["shadow"] = shadow
    return {"version": 3, "endpoints": {"iris": endpoint}}


def test_a_shadow_target_goes_through_json_and_back() -> None:
    raw = shadow_json(model={"name": "iris", "version": "2"})
    table = RoutingTable.from_json(table_json(raw))
    shadow = table.endpoints["iris"].shadow
    assert shadow == ShadowTarget(
        "iris-2@ab12cd34",
        "iris-2",
        50,
        1e-6,
        (ReplicaTarget("c-1", "http://127.0.0.1:9101"),),
        ServedModel("iris", "2"),
    )
    assert table.to_json()["endpoints"]["iris"]["shadow"] == raw
    assert RoutingTable.from_json(json.loads(json.dumps(table.to_json()))) == table


def test_a_table_without_a_shadow_parses_as_before_and_omits_it() -> None:
    table = RoutingTable.from_json(table_json())
    assert table.endpoints["iris"].shadow is None
    assert "shadow" not in table.to_json()["endpoints"]["iris"]
    assert RoutingTable.from_json(table_json(None)).endpoints["iris"].shadow is None


def test_a_shadow_without_model_or_tolerance_takes_the_defaults() -> None:
    raw = shadow_json()
    del raw["tolerance"]
    shadow = RoutingTable.from_json(table_json(raw)).endpoints["iris"].shadow
    assert shadow is not None
    assert (shadow.tolerance, shadow.model) == (0.0, ServedModel())
    assert "model" not in shadow.to_json()


@pytest.mark.parametrize(
    ("shadow", "field"),
    [
        ([], "endpoints.iris.shadow must be an object"),
        (shadow_json(key=""), "endpoints.iris.shadow.key"),
        ({k: v for k, v in shadow_json().items() if k != "key"}, "endpoints.iris.shadow.key"),
        (shadow_json(key="iris-1"), "endpoints.iris.shadow.key 'iris-1' must differ"),
        (shadow_json(served_name=3), "endpoints.iris.shadow.served_name"),
        (shadow_json(percent=0), "endpoints.iris.shadow.percent"),
        (shadow_json(percent=101), "endpoints.iris.shadow.percent"),
        (shadow_json(percent=True), "endpoints.iris.shadow.percent"),
        (shadow_json(percent=12.5), "endpoints.iris.shadow.percent"),
        (shadow_json(tolerance=-1), "endpoints.iris.shadow.tolerance"),
        (shadow_json(tolerance=float("nan")), "endpoints.iris.shadow.tolerance"),
        (shadow_json(tolerance="0.1"), "endpoints.iris.shadow.tolerance"),
        (shadow_json(replicas=[]), "endpoints.iris.shadow.replicas must be a non-empty"),
        (shadow_json(replicas=[{"id": "c-1"}]), "endpoints.iris.shadow.replicas[0]"),
        (shadow_json(replicas=[{"id": "c", "url": "ftp://x"}]), "endpoints.iris.shadow.replicas"),
        (shadow_json(model="iris"), "endpoints.iris.shadow.model"),
    ],
)
def test_a_malformed_shadow_is_refused_naming_its_field(shadow: Any, field: str) -> None:
    with pytest.raises(ValueError) as info:
        RoutingTable.from_json(table_json(shadow))
    assert str(info.value).startswith(field), str(info.value)


@pytest.mark.parametrize(
    ("percent", "expected"), [(100, 100), (50, 50), (33, 33), (10, 10), (1, 1)]
)
def test_the_sampler_takes_exactly_the_share(percent: int, expected: int) -> None:
    sampler = ShadowSampler()
    taken = [sampler.take("iris", "k", percent) for _ in range(100)]
    assert sum(taken) == expected


def test_at_50_percent_every_second_request_is_mirrored_and_a_new_target_starts_afresh() -> None:
    sampler = ShadowSampler()
    assert [sampler.take("iris", "k", 50) for _ in range(6)] == [False, True] * 3
    assert [sampler.take("iris", "k", 10) for _ in range(10)].count(True) == 1
    assert sampler.take("other", "k", 50) is False  # counted per endpoint
    sampler.take("iris", "k", 50)
    sampler.forget_except(set())
    assert [sampler.take("iris", "k", 50) for _ in range(2)] == [False, True]


# The mirrors, with a fake candidate


class Candidate:
    """Stands for the pool: answers with `reply(body)` after `delay` s, and records calls."""

    def __init__(self, reply: Callable[[bytes], Answer], delay: float = 0.0) -> None:
        self.reply = reply
        self.delay = delay
        self.calls: list[tuple[URL, bytes, str]] = []

    async def post(self, url: URL, body: bytes, content_type: str, timeout: float) -> Answer:
        self.calls.append((url, body, content_type))
        await asyncio.sleep(self.delay)
        return self.reply(body)


def json_answer(status: int, value: Any) -> Callable[[bytes], Answer]:
    return lambda _body: Answer(status, b"application/json", json.dumps(value).encode())


def endpoint(percent: int = 100, replicas: int = 1, capture: bool = False) -> EndpointTable:
    target = ShadowTarget(
        "iris-2@ab12",
        "iris-2",
        percent,
        1e-6,
        tuple(ReplicaTarget(f"c-{i}", f"http://127.0.0.1:{9101 + i}") for i in range(replicas)),
        ServedModel("iris", "2"),
    )
    return EndpointTable(
        "iris",
        (("iris-1", 100),),
        {"iris-1": (ReplicaTarget("s-1", "http://127.0.0.1:9001"),)},
        shadow=target,
        capture=CAPTURE if capture else None,
    )


def exchange(predictions: list[float], status: int = 200) -> Exchange:
    request = json.dumps({"client_request_id": "r-1", "inputs": [[1.0]] * len(predictions)})
    answer = json.dumps({"predictions": predictions}).encode()
    return Exchange(request.encode(), "application/json", status, answer, 4.0, "anonymous")


def figures(metrics: Metrics, since: float | None = None) -> dict[str, Any]:
    found: dict[str, Any] = metrics.report(since)["endpoints"]["iris"]["shadow"]["iris-2@ab12"]
    return found


async def run_mirrors(
    candidate: Candidate, exchanges: list[Exchange], **kw: Any
) -> tuple[Metrics, Shadow]:
    metrics = Metrics()
    metrics.record("iris", "iris-1", 4.0, False)
    capture = kw.pop("capture_buffer", None)
    table = kw.pop("table", None) or endpoint()
    shadow = Shadow(metrics.shadow, candidate.post, capture, **kw)
    for ex in exchanges:
        shadow.offer(table, ex)
    while shadow.inflight:
        await asyncio.sleep(0.001)
    return metrics, shadow


def test_an_agreeing_candidate_is_measured_and_the_request_sent_as_it_came() -> None:
    candidate = Candidate(json_answer(200, {"predictions": [1.0, 2.0000000001]}))
    ex = exchange([1.0, 2.0])
    metrics, _ = asyncio.run(run_mirrors(candidate, [ex] * 3))
    assert [(str(u), b, t) for u, b, t in candidate.calls] == [
        ("http://127.0.0.1:9101/invocations", ex.request, "application/json")
    ] * 3
    got = figures(metrics)
    assert {k: got[k] for k in ("requests", "errors", "rows", "differing", "dropped")} == {
        "requests": 3,
        "errors": 0,
        "rows": 6,
        "differing": 0,
        "dropped": 0,
    }
    assert got["disagreement_rate"] == 0.0 and got["error_rate"] == 0.0
    assert got["primary_p99_ms"] == 4.0 and got["p99_ms"] is not None
    assert (got["served_name"], got["total_requests"], got["total_rows"]) == ("iris-2", 3, 6)
    entity = metrics.report(None)["endpoints"]["iris"]
    assert entity["requests"] == 1  # the mirrors are not requests of the endpoint


def test_a_disagreeing_candidate_differs_in_every_row() -> None:
    candidate = Candidate(json_answer(200, {"predictions": [9.0, 9.0]}))
    metrics, _ = asyncio.run(run_mirrors(candidate, [exchange([1.0, 2.0])] * 2))
    got = figures(metrics)
    assert (got["rows"], got["differing"], got["disagreement_rate"]) == (4, 4, 1.0)
    assert got["errors"] == 0


@pytest.mark.parametrize(
    ("candidate_status", "user_status", "error"),
    [(500, 200, True), (503, 400, True), (400, 200, True), (422, 400, False), (200, 500, False)],
)
def test_what_counts_as_a_candidate_error(
    candidate_status: int, user_status: int, error: bool
) -> None:
    candidate = Candidate(json_answer(candidate_status, {"predictions": [1.0]}))
    metrics, _ = asyncio.run(run_mirrors(candidate, [exchange([1.0], user_status)]))
    got = figures(metrics)
    assert (got["requests"], got["errors"], got["rows"]) == (1, int(error), 0)


def test_an_unreachable_or_slow_candidate_is_an_error() -> None:
    def refuse(_body: bytes) -> Answer:
        raise ConnectError("connection refused")

    metrics, _ = asyncio.run(run_mirrors(Candidate(refuse), [exchange([1.0])]))
    assert (figures(metrics)["requests"], figures(metrics)["errors"]) == (1, 1)
    slow = Candidate(json_answer(200, {"predictions": [1.0]}), delay=5.0)
    metrics, _ = asyncio.run(run_mirrors(slow, [exchange([1.0])], timeout=0.05))
    assert (figures(metrics)["requests"], figures(metrics)["errors"]) == (1, 1)


def test_mirrors_beyond_the_limit_are_dropped_and_counted() -> None:
    candidate = Candidate(json_answer(200, {"predictions": [1.0]}), delay=0.05)
    metrics, _ = asyncio.run(run_mirrors(candidate, [exchange([1.0])] * 5, limit=2))
    got = figures(metrics)
    assert (got["requests"], got["dropped"], got["total_dropped"]) == (2, 3, 3)
    assert len(candidate.calls) == 2


def test_the_sampled_share_goes_round_robin_over_the_candidates_replicas() -> None:
    candidate = Candidate(json_answer(200, {"predictions": [1.0]}))
    table = endpoint(percent=50, replicas=2)
    metrics, _ = asyncio.run(run_mirrors(candidate, [exchange([1.0])] * 8, table=table))
    ports = [u.port for u, _, _ in candidate.calls]
    assert ports == [9101, 9102, 9101, 9102]
    assert figures(metrics)["requests"] == 4


def test_a_window_after_the_mirrors_sees_none_of_them() -> None:
    candidate = Candidate(json_answer(200, {"predictions": [1.0]}))
    metrics, _ = asyncio.run(run_mirrors(candidate, [exchange([1.0])] * 2))
    later = figures(metrics, since=1e12)
    assert (later["requests"], later["p99_ms"], later["total_requests"]) == (0, None, 2)


def test_a_push_without_the_shadow_and_shutdown_cancel_the_mirrors_in_flight() -> None:
    async def scenario() -> tuple[Metrics, Candidate]:
        candidate = Candidate(json_answer(200, {"predictions": [1.0]}), delay=30.0)
        state = GatewayState()
        shadow = Shadow(state.metrics.shadow, candidate.post)
        state.on_table.append(shadow.table_changed)
        table = endpoint()
        state.set_table(RoutingTable(1, {"iris": table}))
        shadow.offer(table, exchange([1.0]))
        shadow.offer(table, exchange([1.0]))
        await asyncio.sleep(0.01)
        assert shadow.inflight == 2
        bare = EndpointTable("iris", table.routes, table.entities)
        state.set_table(RoutingTable(2, {"iris": bare}))  # the shadow is gone
        await asyncio.sleep(0.01)
        assert shadow.inflight == 0
        state.set_table(RoutingTable(3, {"iris": table}))
        shadow.offer(table, exchange([1.0]))
        await asyncio.sleep(0.01)
        assert shadow.inflight == 1
        await shadow.close()
        assert shadow.inflight == 0
        assert shadow.offer(table, exchange([1.0])) is False  # none after close
        return state.metrics, candidate

    metrics, candidate = asyncio.run(scenario())
    assert len(candidate.calls) == 3
    assert "shadow" not in metrics.report(None).get("endpoints", {}).get("iris", {})


def test_a_captured_mirror_is_its_own_row_flagged_shadow() -> None:
    candidate = Candidate(json_answer(201, {"predictions": [7.0]}))
    buffer = CaptureBuffer()
    table = endpoint(capture=True)
    ex = exchange([1.0])
    asyncio.run(run_mirrors(candidate, [ex], capture_buffer=buffer, table=table))
    (record,) = buffer.take()
    assert record.shadow is True
    assert (record.served_entity, record.model_name, record.model_version) == (
        "iris-2",
        "iris",
        "2",
    )
    assert (record.status_code, record.request) == (201, ex.request)
    assert json.loads(record.response) == {"predictions": [7.0]}
    user = record._replace(shadow=False, served_entity="iris-1", status_code=200)
    rows = build_rows([record, user]).to_pylist()
    assert dict(rows[0]["request_metadata"])["shadow"] == "true"
    assert "shadow" not in dict(rows[1]["request_metadata"])
    assert rows[0]["client_request_id"] == rows[1]["client_request_id"] == "r-1"


def test_a_row_without_the_flag_has_the_metadata_as_before() -> None:
    record = Captured(CAPTURE, "iris", "iris-1", None, None, 0, 200, 1, b"{}", b"{}", "anonymous")
    assert metadata(record) == [
        ("endpoint_name", "iris"),
        ("served_entity_name", "iris-1"),
        ("requester", "anonymous"),
    ]


def test_prometheus_exposes_the_shadow_counters() -> None:
    state = GatewayState()
    sample = ShadowSample(0.0, "iris", "iris-2@ab12", 3.0, 2.0, True, 4, 1)
    state.metrics.shadow.record(sample, "iris-2")
    state.metrics.shadow.record(
        ShadowSample(0.0, "iris", "iris-2@ab12", 0.0, 2.0, False, 0, 0, True), "iris-2"
    )
    text = render(GatewayCollector(state)).decode()
    labels = 'endpoint_name="iris",served_entity_name="iris-2",shadow_key="iris-2@ab12"'
    for name, value in (
        ("declare_shadow_requests_total", 1),
        ("declare_shadow_errors_total", 1),
        ("declare_shadow_rows_total", 4),
        ("declare_shadow_differing_rows_total", 1),
        ("declare_shadow_dropped_total", 1),
    ):
        assert f"{name}{{{labels}}} {float(value)}" in text, text
