"""Balancing of the gateway: the pure choice of served entity, then of replica, per request.

The entity is drawn by weighted random over the endpoint's routes (`traffic_percentage`); the
replica is the one of that entity with the fewest requests in flight, ties broken
round-robin. A compiled, immutable form of the routing table makes that choice cheap.

Nothing here does I/O, keeps counters or knows HTTP: the caller owns the in-flight counts
and the round-robin cursor and passes them in (see `state.py` and `dataplane.py`). This is
not `declare.routing`, which derives the routing table from declare's state on the other
side of the admin interface.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from declare.gateway.table import EndpointTable, ReplicaTarget, RoutingTable


@dataclass(frozen=True)
class CompiledEndpoint:
    """One endpoint of a table, ready for fast weighted choice.

    `entities` and `cumulative` are parallel: entity i is chosen when a draw in [0, 100)
    falls below `cumulative[i]` and at or above `cumulative[i - 1]`. Routes with 0 % are left
    out. An endpoint without routes spreads traffic evenly over its entities.
    """

    table: EndpointTable
    entities: tuple[str, ...]
    cumulative: tuple[float, ...]

    @property
    def total(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def replicas(self, entity: str) -> tuple[ReplicaTarget, ...]:
        return self.table.entities.get(entity, ())


@dataclass(frozen=True)
class CompiledTable:
    """A routing table and its compiled endpoints; swapped in as one reference."""

    table: RoutingTable
    endpoints: Mapping[str, CompiledEndpoint]

    @property
    def version(self) -> int:
        return self.table.version


def compile_endpoint(ep: EndpointTable) -> CompiledEndpoint:
    weighted: list[tuple[str, float]] = [(name, float(pct)) for name, pct in ep.routes if pct > 0]
    if not ep.routes:
        weighted = [(name, 1.0) for name in ep.entities]
    names: list[str] = []
    cumulative: list[float] = []
    running = 0.0
    for name, weight in weighted:
        running += weight
        names.append(name)
        cumulative.append(running)
    return CompiledEndpoint(ep, tuple(names), tuple(cumulative))


def compile_table(table: RoutingTable) -> CompiledTable:
    return CompiledTable(
        table, {name: compile_endpoint(ep) for name, ep in table.endpoints.items()}
    )


def pick_entity(endpoint: CompiledEndpoint, draw: float) -> str | None:
    """The entity a uniform `draw` in [0, 1) selects; None when the endpoint routes nowhere."""
    if not endpoint.entities:
        return None
    index = bisect.bisect_right(endpoint.cumulative, draw * endpoint.total)
    return endpoint.entities[min(index, len(endpoint.entities) - 1)]


def pick_replica(
    replicas: Sequence[ReplicaTarget],
    inflight: Mapping[str, int],
    cursor: int,
    exclude: frozenset[str] = frozenset(),
) -> ReplicaTarget | None:
    """The replica with the fewest requests in flight, scanning from `cursor` (round-robin).

    Scanning starts at `cursor % len(replicas)` and keeps the first minimum found, so callers
    that advance the cursor by one per request spread ties evenly. Replicas whose id is in
    `exclude` are skipped. None when no replica is left.
    """
    count = len(replicas)
    if count == 0:
        return None
    best: ReplicaTarget | None = None
    best_load = 0
    start = cursor % count
    for offset in range(count):
        replica = replicas[(start + offset) % count]
        if replica.id in exclude:
            continue
        load = inflight.get(replica.id, 0)
        if best is None or load < best_load:
            best, best_load = replica, load
            if load == 0:
                break
    return best


def fallback_entities(endpoint: CompiledEndpoint, first: str) -> list[str]:
    """Entities to retry on after `first` failed: `first` itself, then the other routed ones.

    Others come by descending traffic share; an entity at 0 % is never used, even for a retry.
    """
    shares = dict(endpoint.table.routes)
    others = [name for name in endpoint.entities if name != first]
    others.sort(key=lambda name: -shares.get(name, 0))
    return [first, *others]


def endpoint_ready(ep: EndpointTable) -> bool:
    """READY when every routed entity (share above 0) has at least one replica."""
    routed = [name for name, pct in ep.routes if pct > 0] or list(ep.entities)
    if not routed:
        return False
    return all(ep.entities.get(name) for name in routed)
