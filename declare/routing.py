"""Derive the gateway's routing table from the recorded state.

Pure functions of `State`: the routing table declare pushes is always computed from what the
state records (which replicas are in rotation for which routed entity), so pushing it again
is always safe. `expected_routing` is the same derivation without the endpoint's description,
for comparing with what a gateway routes (drift). The description itself (Databricks' GET
shape) is `declare.describe`'s. Where each replica's log and each entity's build log are
read (`declare.model.logs`) is carried from the replicas' handles as their providers wrote
it, for the gateway's `.../served-models/{name}/logs` and `build-logs`; drift ignores it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from declare.describe import describe
from declare.gateway.table import (
    EndpointTable,
    ReplicaTarget,
    RoutingTable,
    ServedModel,
    ShadowTarget,
)
from declare.model import BuildLog, CaptureTarget, RateLimit
from declare.state.document import EndpointRecord, State


def target_key(traffic: tuple[tuple[str, str, int], ...], entity: str, generation: str) -> str:
    """The gateway's key for one traffic target: the entity's name, or `name@generation`
    while two generations of one entity share the traffic (a rollout of a changed entity)."""
    if sum(1 for e, _, _ in traffic if e == entity) > 1:
        return f"{entity}@{generation[:8]}"
    return entity


@dataclass(frozen=True)
class Routing:
    """How one endpoint should be routed: shares by target key, replicas per key, limits."""

    routes: tuple[tuple[str, int], ...]
    entities: dict[str, tuple[ReplicaTarget, ...]]
    served_names: dict[str, str]  # target key -> served entity name, where they differ
    rate_limits: tuple[RateLimit, ...]
    hold_seconds: float = 0.0
    capture: CaptureTarget | None = None
    models: dict[str, ServedModel] | None = None  # target key -> the model it serves
    shadow: ShadowTarget | None = None  # during a shadow step: the mirrored candidate
    build_logs: dict[str, BuildLog] | None = None  # target key -> its environment's build log

    def replica_ids(self) -> dict[str, list[str]]:
        return {key: sorted(t.id for t in targets) for key, targets in self.entities.items()}


def expected_routing(record: EndpointRecord) -> Routing | None:
    """How the gateway should route `record`; None when nothing is routed (being created or
    destroyed)."""
    if record.spec is None or not record.routes:
        return None
    traffic = record.traffic()
    entities: dict[str, tuple[ReplicaTarget, ...]] = {}
    served: dict[str, str] = {}
    models: dict[str, ServedModel] = {}
    build_logs: dict[str, BuildLog] = {}
    routes: list[tuple[str, int]] = []
    for entity, generation, pct in traffic:
        key = target_key(traffic, entity, generation)
        resolved = record.models.get(entity)
        if resolved is not None and record.generation(entity) == generation:
            models[key] = ServedModel(resolved.name, resolved.version)
        entities[key] = tuple(
            ReplicaTarget(r.id, r.handle.url, r.handle.logs)
            for r in record.serving_replicas(entity, generation)
        )
        build = _build_log(record, entity, generation)
        if build is not None:
            build_logs[key] = build
        routes.append((key, pct))
        if key != entity:
            served[key] = entity
    return Routing(
        tuple(routes),
        entities,
        served,
        record.spec.enforced_limits,
        record.spec.autoscaling.hold_seconds,
        record.spec.capture,
        models,
        shadow=_shadow(record),
        build_logs=build_logs,
    )


def _shadow(record: EndpointRecord) -> ShadowTarget | None:
    """The mirrored candidate of a shadow step; None when there is none, or when none of
    its replicas is in rotation (nothing to mirror to)."""
    s = record.shadow
    if s is None:
        return None
    replicas = tuple(
        ReplicaTarget(r.id, r.handle.url) for r in record.serving_replicas(s.entity, s.generation)
    )
    if not replicas:
        return None
    return ShadowTarget(
        key=s.key,
        served_name=s.entity,
        percent=s.percent,
        tolerance=s.tolerance,
        replicas=replicas,
        model=ServedModel(s.model_name, s.model_version),
    )


def _build_log(record: EndpointRecord, entity: str, generation: str) -> BuildLog | None:
    """The build log its provider named in a replica of `entity` at `generation` (in
    rotation or not: every replica of one generation has the same environment)."""
    for r in record.replicas:
        logs = r.handle.logs
        if r.entity == entity and r.generation == generation and logs and logs.build:
            return logs.build
    return None


def routing_table(state: State, version: int | None = None) -> RoutingTable:
    endpoints: dict[str, EndpointTable] = {}
    for name, record in sorted(state.endpoints.items()):
        routing = expected_routing(record)
        if routing is None:
            # Being created, or its first apply failed: the gateway describes it (NOT_READY,
            # its config_update and message) and routes it nowhere (503, not 404).
            endpoints[name] = EndpointTable(name, (), {}, describe(record))
            continue
        endpoints[name] = EndpointTable(
            name=name,
            routes=routing.routes,
            entities=routing.entities,
            description=describe(record),
            served_names=routing.served_names,
            rate_limits=routing.rate_limits,
            hold_seconds=routing.hold_seconds,
            capture=routing.capture,
            models=routing.models or {},
            shadow=routing.shadow,
            build_logs=routing.build_logs or {},
        )
    return RoutingTable(
        version=version if version is not None else int(time.time() * 1000),
        endpoints=endpoints,
    )


def keeping_served(table: RoutingTable, live: RoutingTable, names: frozenset[str]) -> RoutingTable:
    """`table`, except that an endpoint of `names` it routes nowhere while the gateway's
    `live` table serves it (routes and at least one replica) keeps its live entry.

    For endpoints an apply is creating while the gateway already serves them (the state was
    lost, the gateway kept its table): until their switch they are routed as before, never
    to nothing (404 or 503) while their replicas start or are adopted."""
    kept = dict(table.endpoints)
    for name in sorted(names):
        mine, theirs = kept.get(name), live.endpoints.get(name)
        if mine is not None and mine.routes:
            continue
        if theirs is None or not theirs.routes or not any(theirs.entities.values()):
            continue
        kept[name] = theirs
    return RoutingTable(version=table.version, endpoints=kept)


def routes_as_expected(record: EndpointRecord, live: EndpointTable | None) -> bool:
    """True when a gateway's `live` entry routes `record` as the state says it should:
    the same shares, the same replica ids per target, the same limits and capture (not
    where logs are read: that is no routing, and a table pushed before it was carried must
    not look drifted)."""
    expected = expected_routing(record)
    if expected is None:  # routed nowhere: absent, or described with no routes
        return live is None or (not live.routes and not live.entities)
    if live is None:
        return False
    if live.routes != expected.routes or live.rate_limits != expected.rate_limits:
        return False
    if live.hold_seconds != expected.hold_seconds or live.capture != expected.capture:
        return False
    if _shadow_ids(live.shadow) != _shadow_ids(expected.shadow):
        return False
    have = {key: sorted(t.id for t in targets) for key, targets in live.entities.items()}
    return all(have.get(key, []) == ids for key, ids in expected.replica_ids().items())


def _shadow_ids(s: ShadowTarget | None) -> tuple[str, int, list[str]] | None:
    return None if s is None else (s.key, s.percent, sorted(t.id for t in s.replicas))
