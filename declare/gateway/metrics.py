"""Request metrics of the gateway, per endpoint and served entity, for rollout guards.

Every finished public request to a known endpoint is one sample (finish time, endpoint,
entity, latency, whether it was an error: see `dataplane.py`). Samples sit in a bounded ring
(the most recent `capacity`), so a report over a window (`since`) sees at most that many;
cumulative counts since the gateway started are kept apart and never dropped (requests,
errors, connection failures, answers per HTTP status, a latency histogram: `Totals`, for
GET /metrics, see `exposition.py`). A request rejected before an entity was chosen (bad
JSON, body too large, a rate limit) counts for its endpoint only.

The mirrored requests of a shadow step (`shadow.py`) are kept apart in `ShadowMetrics`
(`Metrics.shadow`), per endpoint and shadow key, in a ring and totals of their own: they are
no requests of the endpoint and never count in its figures or its entities'.

Not thread-safe: the gateway runs one event loop and calls `record` from it.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_CAPACITY = 100_000
# Upper bounds (ms) of the cumulative latency histogram of GET /metrics; +Inf is implied.
LATENCY_BUCKETS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                      10000.0, 30000.0)  # fmt: skip


class Totals:
    """Cumulative counts of one (endpoint, entity or None) since the gateway started."""

    __slots__ = ("buckets", "codes", "connection_failures", "errors", "latency_sum_ms", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.connection_failures = 0
        self.codes: dict[int, int] = {}  # HTTP status -> requests answered with it
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)  # per bucket, not cumulative
        self.latency_sum_ms = 0.0


@dataclass(frozen=True)
class Sample:
    finished: float  # unix seconds
    endpoint: str
    entity: str | None
    latency_ms: float
    error: bool
    status: int = 200


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None when it is empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(samples: Iterable[Sample]) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    for sample in samples:
        latencies.append(sample.latency_ms)
        errors += sample.error
    latencies.sort()
    p50 = percentile(latencies, 0.50)
    p99 = percentile(latencies, 0.99)
    return {
        "requests": len(latencies),
        "errors": errors,
        "error_rate": errors / len(latencies) if latencies else 0.0,
        "p50_ms": round(p50, 3) if p50 is not None else None,
        "p99_ms": round(p99, 3) if p99 is not None else None,
    }


@dataclass(frozen=True, slots=True)
class ShadowSample:
    """One mirrored request's outcome (or its drop: the mirrors in flight were at the limit)."""

    finished: float  # unix seconds
    endpoint: str
    key: str  # the shadow target's key
    latency_ms: float  # the candidate's; 0 for a drop
    primary_ms: float  # the user's answer's, for the same request
    error: bool
    rows: int
    differing: int
    dropped: bool = False


class ShadowTotals:
    """Cumulative counts of one (endpoint, shadow key) since the gateway started."""

    __slots__ = ("differing", "dropped", "errors", "requests", "rows", "served_name")

    def __init__(self, served_name: str) -> None:
        self.served_name = served_name
        self.requests = 0
        self.errors = 0
        self.rows = 0
        self.differing = 0
        self.dropped = 0


def summarize_shadow(samples: Iterable[ShadowSample]) -> dict[str, Any]:
    """The windowed figures of one shadow target (p99s None when nothing was answered)."""
    latencies: list[float] = []
    primary: list[float] = []
    errors = rows = differing = dropped = 0
    for sample in samples:
        if sample.dropped:
            dropped += 1
            continue
        latencies.append(sample.latency_ms)
        primary.append(sample.primary_ms)
        errors += sample.error
        rows += sample.rows
        differing += sample.differing
    latencies.sort()
    primary.sort()
    p99, primary_p99 = percentile(latencies, 0.99), percentile(primary, 0.99)
    return {
        "requests": len(latencies),
        "errors": errors,
        "error_rate": errors / len(latencies) if latencies else 0.0,
        "p99_ms": round(p99, 3) if p99 is not None else None,
        "primary_p99_ms": round(primary_p99, 3) if primary_p99 is not None else None,
        "rows": rows,
        "differing": differing,
        "disagreement_rate": differing / rows if rows else 0.0,
        "dropped": dropped,
    }


class ShadowMetrics:
    """The ring of recent mirrored requests and their cumulative counts."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._ring: deque[ShadowSample] = deque(maxlen=capacity)
        self._totals: dict[tuple[str, str], ShadowTotals] = {}

    def record(self, sample: ShadowSample, served_name: str) -> None:
        self._ring.append(sample)
        totals = self.totals(sample.endpoint, sample.key, served_name)
        if sample.dropped:
            totals.dropped += 1
            return
        totals.requests += 1
        totals.errors += sample.error
        totals.rows += sample.rows
        totals.differing += sample.differing

    def totals(self, endpoint: str, key: str, served_name: str) -> ShadowTotals:
        found = self._totals.get((endpoint, key))
        if found is None:
            found = self._totals[(endpoint, key)] = ShadowTotals(served_name)
        return found

    def all_totals(self) -> dict[tuple[str, str], ShadowTotals]:
        """Every (endpoint, shadow key) seen, with its cumulative counts (a copy)."""
        return dict(self._totals)

    def report(self, since: float | None) -> dict[str, dict[str, Any]]:
        """endpoint -> shadow key -> the figures of `summarize_shadow` over the window, and
        "served_name", "total_requests", "total_errors", "total_rows", "total_differing",
        "total_dropped" since start."""
        window: dict[tuple[str, str], list[ShadowSample]] = {}
        for sample in reversed(self._ring):
            if since is not None and sample.finished < since:
                break
            window.setdefault((sample.endpoint, sample.key), []).append(sample)
        out: dict[str, dict[str, Any]] = {}
        for (endpoint, key), t in sorted(self._totals.items()):
            item = summarize_shadow(window.get((endpoint, key), []))
            item["served_name"] = t.served_name
            item["total_requests"] = t.requests
            item["total_errors"] = t.errors
            item["total_rows"] = t.rows
            item["total_differing"] = t.differing
            item["total_dropped"] = t.dropped
            out.setdefault(endpoint, {})[key] = item
        return out


class Metrics:
    """The ring of recent samples and the cumulative counters (and the shadows' apart)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._ring: deque[Sample] = deque(maxlen=capacity)
        self._totals: dict[tuple[str, str | None], Totals] = {}
        self.shadow = ShadowMetrics(capacity)

    def record(
        self,
        endpoint: str,
        entity: str | None,
        latency_ms: float,
        error: bool,
        status: int = 200,
    ) -> None:
        self._ring.append(Sample(time.time(), endpoint, entity, latency_ms, error, status))
        totals = self.totals(endpoint, entity)
        totals.requests += 1
        totals.errors += error
        totals.codes[status] = totals.codes.get(status, 0) + 1
        totals.buckets[bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        totals.latency_sum_ms += latency_ms

    def record_connection_failure(self, endpoint: str, entity: str) -> None:
        """A replica of `entity` could not be reached (the request may still have succeeded)."""
        self.totals(endpoint, entity).connection_failures += 1

    def totals(self, endpoint: str, entity: str | None) -> Totals:
        """The cumulative counts of (endpoint, entity), created at zero on first use."""
        found = self._totals.get((endpoint, entity))
        if found is None:
            found = self._totals[(endpoint, entity)] = Totals()
        return found

    def all_totals(self) -> dict[tuple[str, str | None], Totals]:
        """Every (endpoint, entity or None) seen, with its cumulative counts (a copy)."""
        return dict(self._totals)

    def window(self, since: float | None) -> list[Sample]:
        """Samples finished at or after `since` (all kept samples when None), oldest first."""
        if since is None:
            return list(self._ring)
        out: list[Sample] = []
        for sample in reversed(self._ring):
            if sample.finished < since:
                break
            out.append(sample)
        out.reverse()
        return out

    def report(self, since: float | None) -> dict[str, Any]:
        """The JSON of GET /_declare/admin/metrics.

        {"since": s, "now": t, "capacity": n, "endpoints": {ep: {"requests", "errors",
        "error_rate", "p50_ms", "p99_ms", "total_requests", "total_errors",
        "entities": {entity: {same keys + "total_connection_failures"}},
        "shadow": {shadow key: ShadowMetrics.report's figures}}}}
        where the first five keys cover the window and `total_*` everything since start;
        "shadow" is there for an endpoint that had a shadow target since the start.
        """
        samples = self.window(since)
        by_endpoint: dict[str, list[Sample]] = {}
        by_entity: dict[tuple[str, str], list[Sample]] = {}
        for sample in samples:
            by_endpoint.setdefault(sample.endpoint, []).append(sample)
            if sample.entity is not None:
                by_entity.setdefault((sample.endpoint, sample.entity), []).append(sample)
        shadows = self.shadow.report(since)
        names = {ep for ep, _ in self._totals} | set(by_endpoint) | set(shadows)
        endpoints: dict[str, Any] = {}
        for name in sorted(names):
            totals = [c for (ep, _), c in self._totals.items() if ep == name]
            entry = summarize(by_endpoint.get(name, []))
            entry["total_requests"] = sum(c.requests for c in totals)
            entry["total_errors"] = sum(c.errors for c in totals)
            entities: dict[str, Any] = {}
            entity_names = {ent for (ep, ent) in self._totals if ep == name and ent is not None}
            for entity in sorted(entity_names):
                counters = self._totals[(name, entity)]
                item = summarize(by_entity.get((name, entity), []))
                item["total_requests"] = counters.requests
                item["total_errors"] = counters.errors
                item["total_connection_failures"] = counters.connection_failures
                entities[entity] = item
            entry["entities"] = entities
            if name in shadows:
                entry["shadow"] = shadows[name]
            endpoints[name] = entry
        return {
            "since": since,
            "now": time.time(),
            "capacity": self.capacity,
            "endpoints": endpoints,
        }
