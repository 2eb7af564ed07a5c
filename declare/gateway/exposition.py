"""The gateway's metrics in Prometheus' text format (`prometheus_client`), two views.

    GET /metrics                                  every endpoint, cumulative since start:
        declare_requests_total{endpoint_name, served_entity_name, code}       counter
        declare_request_errors_total{endpoint_name, served_entity_name}        counter
        declare_upstream_connection_failures_total{...}                        counter
        declare_request_latency_ms{endpoint_name, served_entity_name}          histogram
        declare_requests_in_flight / declare_requests_held{...}                gauges
        declare_replicas_in_rotation{endpoint_name, served_entity_name}        gauge
        declare_routing_table_version                                          gauge
        declare_capture_{captured,dropped,written,failed}_total, _buffered     inference tables
        declare_shadow_{requests,errors,rows,differing_rows,dropped}_total      a shadow step's
            {endpoint_name, served_entity_name, shadow_key}                    mirrors (shadow.py)
    GET /api/2.0/serving-endpoints/{name}/metrics  one endpoint, as Databricks' export
        (the SDK's `export_metrics`) names it, over the last minute:
        request_count_total, request_4xx_count_total, request_5xx_count_total  gauges
        request_latency_ms                                                     histogram
        labelled by served_entity_name.

`served_entity_name` is "" for requests refused before an entity was chosen (a rate limit,
a bad body). The collectors read the gateway's state when scraped and change nothing; the
per-request cost is in `metrics.py` (a few counter updates). CPU and memory of replicas
and provisioned concurrency are not known to the gateway and not exported.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from declare.gateway.metrics import LATENCY_BUCKETS_MS, Sample
from declare.gateway.state import GatewayState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WINDOW_SECONDS = 60.0
LABELS = ["endpoint_name", "served_entity_name"]


def _served(state: GatewayState, endpoint: str, entity: str | None) -> str:
    if entity is None:
        return ""
    table = state.table.endpoints.get(endpoint)
    return table.served_name(entity) if table is not None else entity


def _buckets(counts: Iterable[int]) -> list[tuple[str, float]]:
    """Per-bucket counts to Prometheus' cumulative (le, count) pairs, +Inf last."""
    out: list[tuple[str, float]] = []
    running = 0
    bounds = [*(repr(b) for b in LATENCY_BUCKETS_MS), "+Inf"]
    for bound, count in zip(bounds, counts, strict=True):
        running += count
        out.append((bound, float(running)))
    return out


class GatewayCollector(Collector):
    """GET /metrics: every endpoint, cumulative since the gateway started."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        requests = CounterMetricFamily(
            "declare_requests", "Requests answered, by HTTP status", labels=[*LABELS, "code"]
        )
        errors = CounterMetricFamily(
            "declare_request_errors",
            "Requests that failed: any 5xx, and a 4xx once an entity was chosen",
            labels=LABELS,
        )
        failures = CounterMetricFamily(
            "declare_upstream_connection_failures",
            "Replicas that could not be reached (the request was retried on another)",
            labels=LABELS,
        )
        latency = HistogramMetricFamily(
            "declare_request_latency_ms", "Time in the gateway, per request (ms)", labels=LABELS
        )
        for (endpoint, entity), t in sorted(
            state.metrics.all_totals().items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
        ):
            labels = [endpoint, _served(state, endpoint, entity)]
            for code, count in sorted(t.codes.items()):
                requests.add_metric([*labels, str(code)], count)
            errors.add_metric(labels, t.errors)
            failures.add_metric(labels, t.connection_failures)
            latency.add_metric(labels, _buckets(t.buckets), t.latency_sum_ms)
        yield from (requests, errors, failures, latency)
        yield from self._gauges()

    def _gauges(self) -> Iterator[Metric]:
        state = self._state
        inflight = GaugeMetricFamily(
            "declare_requests_in_flight",
            "Requests sent to a replica of the entity (or waiting for a connection to one)",
            labels=LABELS,
        )
        held = GaugeMetricFamily(
            "declare_requests_held",
            "Requests held until the entity has a replica (scale from zero, a restart)",
            labels=LABELS,
        )
        for (endpoint, entity), d in sorted(state.demand.entities.items()):
            labels = [endpoint, _served(state, endpoint, entity)]
            inflight.add_metric(labels, d.inflight)
            held.add_metric(labels, d.held)
        rotation = GaugeMetricFamily(
            "declare_replicas_in_rotation",
            "Replicas the routing table gives the entity, less those ejected after a failure",
            labels=LABELS,
        )
        ejected = state.ejections.active()
        for name, ep in sorted(state.table.endpoints.items()):
            for key, targets in sorted(ep.entities.items()):
                usable = sum(1 for t in targets if t.id not in ejected)
                rotation.add_metric([name, ep.served_name(key)], usable)
        version = GaugeMetricFamily(
            "declare_routing_table_version", "Version of the routing table in force"
        )
        version.add_metric([], state.table.version)
        yield from (inflight, held, rotation, version)
        yield from self._capture()
        yield from self._shadow()

    def _capture(self) -> Iterator[Metric]:
        """The inference tables' buffer: records captured, dropped (buffer full), written,
        lost to a failed write, and waiting."""
        stats = self._state.capture.stats()
        for key, what in (
            ("captured", "Requests put in the capture buffer"),
            ("dropped", "Requests not captured because the capture buffer was full"),
            ("written", "Captured requests written to their inference table"),
            ("failed", "Captured requests lost to a failed write"),
        ):
            family = CounterMetricFamily(f"declare_capture_{key}", what)
            family.add_metric([], stats[key])
            yield family
        buffered = GaugeMetricFamily(
            "declare_capture_buffered", "Captured requests waiting to be written"
        )
        buffered.add_metric([], stats["buffered"])
        yield buffered

    def _shadow(self) -> Iterator[Metric]:
        """The mirrors of shadow steps, per endpoint and candidate (by its served name and
        its key: two generations of one entity may be candidates one after the other)."""
        labels = [*LABELS, "shadow_key"]
        families = {
            "requests": CounterMetricFamily(
                "declare_shadow_requests", "Mirrored requests answered or failed", labels=labels
            ),
            "errors": CounterMetricFamily(
                "declare_shadow_errors",
                "Mirrored requests the candidate failed: a 5xx, no connection or answer, "
                "or a 4xx where the user got a 2xx",
                labels=labels,
            ),
            "rows": CounterMetricFamily(
                "declare_shadow_rows", "Rows compared (both answers 2xx)", labels=labels
            ),
            "differing": CounterMetricFamily(
                "declare_shadow_differing_rows",
                "Rows where the candidate's answer differed from the user's",
                labels=labels,
            ),
            "dropped": CounterMetricFamily(
                "declare_shadow_dropped",
                "Requests sampled for mirroring but dropped: too many mirrors in flight",
                labels=labels,
            ),
        }
        for (endpoint, key), t in sorted(self._state.metrics.shadow.all_totals().items()):
            values = [endpoint, t.served_name, key]
            families["requests"].add_metric(values, t.requests)
            families["errors"].add_metric(values, t.errors)
            families["rows"].add_metric(values, t.rows)
            families["differing"].add_metric(values, t.differing)
            families["dropped"].add_metric(values, t.dropped)
        yield from families.values()


class EndpointCollector(Collector):
    """GET /api/2.0/serving-endpoints/{name}/metrics: Databricks' names, last minute."""

    def __init__(self, state: GatewayState, endpoint: str) -> None:
        self._state = state
        self._endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        since = time.time() - WINDOW_SECONDS
        by_entity: dict[str, list[Sample]] = {}
        for s in self._state.metrics.window(since):
            if s.endpoint == self._endpoint:
                key = _served(self._state, s.endpoint, s.entity)
                by_entity.setdefault(key, []).append(s)
        label = ["served_entity_name"]
        count = GaugeMetricFamily("request_count_total", "Requests, last minute", labels=label)
        c4xx = GaugeMetricFamily(
            "request_4xx_count_total", "4xx answers, last minute", labels=label
        )
        c5xx = GaugeMetricFamily(
            "request_5xx_count_total", "5xx answers, last minute", labels=label
        )
        latency = HistogramMetricFamily(
            "request_latency_ms", "Round-trip latency in the gateway, last minute (ms)",
            labels=label,
        )  # fmt: skip
        entities = set(by_entity) | {
            ep.served_name(k)
            for ep in [self._state.table.endpoints.get(self._endpoint)]
            if ep is not None
            for k in ep.entities
        }
        for entity in sorted(entities):
            samples = by_entity.get(entity, [])
            count.add_metric([entity], len(samples))
            c4xx.add_metric([entity], sum(1 for s in samples if 400 <= s.status < 500))
            c5xx.add_metric([entity], sum(1 for s in samples if s.status >= 500))
            per_bucket = [0] * (len(LATENCY_BUCKETS_MS) + 1)
            for s in samples:
                per_bucket[bisect_left(LATENCY_BUCKETS_MS, s.latency_ms)] += 1
            total = sum(s.latency_ms for s in samples)
            latency.add_metric([entity], _buckets(per_bucket), total)
        yield from (count, c4xx, c5xx, latency)


def render(collector: Collector) -> bytes:
    """The text exposition of one collector (a registry of its own per scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
