"""Request metrics of the gateway, per endpoint and served entity, for rollout guards.

Every finished public request to a known endpoint is one sample (finish time, endpoint,
entity, latency, whether it was an error: see `dataplane.py`). Samples sit in a bounded ring
(the most recent `capacity`), so a report over a window (`since`) sees at most that many;
cumulative counts since the gateway started are kept apart and never dropped. A request
rejected before an entity was chosen (bad JSON, body too large) counts for its endpoint only.

Not thread-safe: the gateway runs one event loop and calls `record` from it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_CAPACITY = 100_000


@dataclass(frozen=True)
class Sample:
    finished: float  # unix seconds
    endpoint: str
    entity: str | None
    latency_ms: float
    error: bool


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


class Metrics:
    """The ring of recent samples and the cumulative counters."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._ring: deque[Sample] = deque(maxlen=capacity)
        # (endpoint, entity or None) -> [requests, errors, connection failures]
        self._totals: dict[tuple[str, str | None], list[int]] = {}

    def record(self, endpoint: str, entity: str | None, latency_ms: float, error: bool) -> None:
        self._ring.append(Sample(time.time(), endpoint, entity, latency_ms, error))
        counters = self._totals.get((endpoint, entity))
        if counters is None:
            counters = self._totals[(endpoint, entity)] = [0, 0, 0]
        counters[0] += 1
        counters[1] += error

    def record_connection_failure(self, endpoint: str, entity: str) -> None:
        """A replica of `entity` could not be reached (the request may still have succeeded)."""
        counters = self._totals.get((endpoint, entity))
        if counters is None:
            counters = self._totals[(endpoint, entity)] = [0, 0, 0]
        counters[2] += 1

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
        "entities": {entity: {same keys + "total_connection_failures"}}}}}
        where the first five keys cover the window and `total_*` everything since start.
        """
        samples = self.window(since)
        by_endpoint: dict[str, list[Sample]] = {}
        by_entity: dict[tuple[str, str], list[Sample]] = {}
        for sample in samples:
            by_endpoint.setdefault(sample.endpoint, []).append(sample)
            if sample.entity is not None:
                by_entity.setdefault((sample.endpoint, sample.entity), []).append(sample)
        names = {ep for ep, _ in self._totals} | set(by_endpoint)
        endpoints: dict[str, Any] = {}
        for name in sorted(names):
            totals = [c for (ep, _), c in self._totals.items() if ep == name]
            entry = summarize(by_endpoint.get(name, []))
            entry["total_requests"] = sum(c[0] for c in totals)
            entry["total_errors"] = sum(c[1] for c in totals)
            entities: dict[str, Any] = {}
            entity_names = {ent for (ep, ent) in self._totals if ep == name and ent is not None}
            for entity in sorted(entity_names):
                counters = self._totals[(name, entity)]
                item = summarize(by_entity.get((name, entity), []))
                item["total_requests"] = counters[0]
                item["total_errors"] = counters[1]
                item["total_connection_failures"] = counters[2]
                entities[entity] = item
            entry["entities"] = entities
            endpoints[name] = entry
        return {
            "since": since,
            "now": time.time(),
            "capacity": self.capacity,
            "endpoints": endpoints,
        }
