"""Work out what changed: desired endpoints vs recorded state vs what really runs.

`diff()` is a pure function (kopf's manner): it takes immutable values and returns one
`EndpointChange` per endpoint (CREATE / UPDATE / DELETE / NOOP) saying which replicas to
start, which to drain and stop, which dead ones to forget, whether the gateway must get new
routing, which fields changed and with what impact, and what drifted. It does no I/O and
knows nothing of providers' machinery or of the DAG (that is `declare.plan`).

Adoption (Terraform's import, done by the refresh): a replica that runs under the project's
labels but that the state does not record (the state was lost, or an apply was cut off
before it recorded what it started), alive, of an endpoint and entity the manifests declare
and of the generation they ask for now, fills a slot that would otherwise start a replica:
it is recorded, not stopped and not replaced (`EndpointChange.adopts`). Any other orphan is
stopped once its endpoint's new routing no longer sends it requests (`declare.plan`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from declare.gateway.table import RoutingTable
from declare.model import (
    EndpointSpec,
    EntitySpec,
    ReplicaHandle,
    ReplicaRange,
    ResolvedModel,
    Route,
)
from declare.model.scaling import DEFAULT_REPLICA_CONCURRENCY
from declare.provider import Liveness, ReplicaStatus
from declare.routing import routes_as_expected
from declare.state.document import NOT_UPDATING, EndpointRecord, State, generation_of


class Change(Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "no-op"

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "delete": "-", "no-op": " "}[self.value]


class Impact(Enum):
    LIVE = "live"  # takes effect without restarting anything
    SCALE = "scale"  # replicas added or removed; the others keep serving
    ROLLING_RESTART = "rolling restart"  # same model, new replicas replace the old ones
    REPLACE = "replace"  # a new model: new replicas, traffic switched, old ones stopped
    REBUILD = "rebuild"  # as replace, and the provider builds a new image first


@dataclass(frozen=True)
class DesiredEndpoint:
    """An endpoint as the manifests ask for it, with every model pinned.

    `per_replica` is the concurrency one replica of its provider serves: with an entity's
    provisioned concurrency it gives the entity's replica range.
    """

    spec: EndpointSpec
    models: Mapping[str, ResolvedModel]
    per_replica: int = DEFAULT_REPLICA_CONCURRENCY

    def generation(self, entity: EntitySpec) -> str:
        return generation_of(self.spec.provider, self.models[entity.name], entity.to_json())

    def range(self, entity: EntitySpec) -> ReplicaRange:
        return entity.replica_range(self.per_replica)

    def target(self, entity: EntitySpec, before: EndpointRecord | None) -> int:
        """How many replicas `entity` should run now.

        The count the runtime keeps (recorded, or the replicas in rotation) when the entity
        already serves this generation, fitted into the range; a new generation starts at
        the count of what it replaces (a rollout keeps the capacity the runtime scaled to),
        and never at zero, so it proves it answers; a new entity at its range's bottom.
        """
        rng = self.range(entity)
        if before is None or before.spec is None:
            return rng.initial
        current = before.current_count(entity.name, self.generation(entity))
        if current is not None:
            return rng.fit(current)
        inherited = before.carrying_count()
        if inherited is not None:
            return rng.fit(max(1, inherited))
        return rng.initial

    @property
    def serving(self) -> dict[str, str]:
        return {e.name: self.generation(e) for e in self.spec.entities}


@dataclass(frozen=True)
class Actual:
    """What a refresh found: replica liveness, orphans, and the gateway."""

    replicas: Mapping[str, ReplicaStatus] = field(default_factory=dict)
    orphans: tuple[ReplicaHandle, ...] = ()
    gateway_running: bool = False
    gateway_settings_hash: str = ""  # of the gateway as it should run (from declare.yaml)
    gateway_table: RoutingTable | None = None
    runtime_running: bool = False
    # the hash of the settings the running gateway says it was started with (None: unsaid)
    gateway_started_hash: str | None = None

    def routed_ids(self) -> frozenset[str]:
        """The replicas the gateway's live table sends requests to now."""
        table = self.gateway_table
        if table is None:
            return frozenset()
        return frozenset(
            t.id for ep in table.endpoints.values() for ts in ep.entities.values() for t in ts
        )

    def alive(self, replica_id: str) -> bool:
        status = self.replicas.get(replica_id)
        return status is not None and status.liveness is Liveness.ALIVE


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any
    impact: Impact


@dataclass(frozen=True)
class ReplicaStart:
    entity: EntitySpec
    model: ResolvedModel
    generation: str
    index: int
    reason: str  # "new", "scale up", "replaces dead replica X"


@dataclass(frozen=True)
class Adoption:
    """A running replica the state does not record, taken as slot `index` of its entity."""

    handle: ReplicaHandle
    index: int
    model: ResolvedModel
    routed: bool = False  # the gateway sends it requests now


@dataclass(frozen=True)
class EndpointChange:
    name: str
    kind: Change
    provider: str
    before: EndpointRecord | None
    after: DesiredEndpoint | None
    fields: tuple[FieldChange, ...] = ()
    starts: tuple[ReplicaStart, ...] = ()
    stops: tuple[ReplicaHandle, ...] = ()  # alive: drain, then stop
    forgets: tuple[ReplicaHandle, ...] = ()  # dead: drop from the record
    adopts: tuple[Adoption, ...] = ()  # running, unrecorded, matching: recorded as they run
    route_push: bool = False
    routing_stale: bool = False  # the gateway does not route it as recorded (or was restarted)
    drift: tuple[str, ...] = ()
    # Replicas taking traffic before and after the change, and at most during it.
    capacity_before: int = 0
    capacity_after: int = 0
    capacity_peak: int = 0

    @property
    def capacity_loss(self) -> bool:
        return self.capacity_after < self.capacity_before

    @property
    def routes_before(self) -> tuple[Route, ...]:
        return self.before.routes if self.before else ()

    @property
    def routes_after(self) -> tuple[Route, ...]:
        return self.after.spec.routes if self.after else ()


def diff(
    desired: Iterable[DesiredEndpoint],
    state: State,
    actual: Actual,
    gateway_recorded_hash: str | None = None,
    replace_entities: frozenset[tuple[str, str]] = frozenset(),
    settle_status: bool = True,
) -> tuple[EndpointChange, ...]:
    """One change per endpoint named in the manifests or in the state, sorted by name.

    `replace_entities` holds (endpoint, served entity) pairs whose running replicas are
    replaced on purpose (`plan --replace`), even though nothing about them changed.
    `settle_status`: an endpoint whose recorded status is not NOT_UPDATING (a failed or an
    interrupted update) is a change, so that apply settles it; the runtime, which never
    changes what was declared, leaves that to apply.
    """
    wanted = {d.spec.name: d for d in desired}
    # Unknown recorded settings restart the gateway too (see plan/build.py `_gateway_start`).
    gateway_fresh = (
        not actual.gateway_running or gateway_recorded_hash != actual.gateway_settings_hash
    )
    out = []
    for name in sorted(set(wanted) | set(state.endpoints)):
        d = wanted.get(name)
        r = state.endpoints.get(name)
        if d is None:
            assert r is not None
            change = _delete(r, actual)
        else:
            change = _create_or_update(d, r, actual, gateway_fresh, replace_entities, settle_status)
        before = _capacity_now(r, actual) if r else 0
        after = _capacity_wanted(d, r) if d else 0
        out.append(
            replace(
                change,
                capacity_before=before,
                capacity_after=after,
                capacity_peak=max(before, after, before + len(change.starts)),
            )
        )
    return tuple(out)


def _capacity_now(r: EndpointRecord, actual: Actual) -> int:
    """Replicas that take traffic now: in rotation for a target with a share, and alive."""
    return sum(
        1
        for entity, generation, pct in r.traffic()
        if pct > 0
        for x in r.serving_replicas(entity, generation)
        if actual.alive(x.id)
    )


def _capacity_wanted(d: DesiredEndpoint, r: EndpointRecord | None) -> int:
    shares = {route.served_entity_name: route.traffic_percentage for route in d.spec.routes}
    return sum(d.target(e, r) for e in d.spec.entities if shares.get(e.name, 0) > 0)


def _delete(r: EndpointRecord, actual: Actual) -> EndpointChange:
    stops = tuple(x.handle for x in r.replicas if actual.alive(x.id))
    forgets = tuple(x.handle for x in r.replicas if not actual.alive(x.id))
    return EndpointChange(
        name=r.name,
        kind=Change.DELETE,
        provider=r.provider,
        before=r,
        after=None,
        stops=stops,
        forgets=forgets,
        route_push=True,
    )


@dataclass(frozen=True)
class _Replicas:
    """What to do with an endpoint's replicas: start, keep (by id), and drift seen."""

    starts: tuple[ReplicaStart, ...]
    keep: frozenset[str]
    drift: tuple[str, ...]
    adopts: tuple[Adoption, ...] = ()


def adoptable(d: DesiredEndpoint, entity: EntitySpec, actual: Actual) -> tuple[ReplicaHandle, ...]:
    """The orphans that may serve `entity` of `d` as they run: alive, of its provider,
    endpoint, entity and wanted generation; those the gateway routes now first."""
    gen = d.generation(entity)
    routed = actual.routed_ids()
    found = [
        h
        for h in actual.orphans
        if h.provider == d.spec.provider
        and h.endpoint == d.spec.name
        and h.entity == entity.name
        and h.generation == gen
        and actual.alive(h.id)
    ]
    return tuple(sorted(found, key=lambda h: (h.id not in routed, h.id)))


def unadopted(
    orphans: Iterable[ReplicaHandle], changes: Iterable[EndpointChange]
) -> tuple[ReplicaHandle, ...]:
    """The orphans no change adopts: to be stopped."""
    taken = {a.handle.id for c in changes for a in c.adopts}
    return tuple(h for h in orphans if h.id not in taken)


def _entity_replicas(
    d: DesiredEndpoint,
    r: EndpointRecord | None,
    entity: EntitySpec,
    actual: Actual,
    forced: bool,
) -> _Replicas:
    """One served entity: which recorded replicas still serve it, which slots need a start."""
    recorded = r.replicas if r else ()
    gen = d.generation(entity)
    count = d.target(entity, r)
    candidates = () if forced else adoptable(d, entity, actual)
    if candidates and (r is None or r.spec is None):
        # Nothing recorded to scale from: as many as run, inside the entity's range.
        count = d.range(entity).fit(max(count, len(candidates)))
    same = [x for x in recorded if x.entity == entity.name and x.generation == gen]
    by_index: dict[int, str] = {}
    drift: list[str] = []
    for x in same:
        if forced or x.retired or not x.ready or x.index >= count:
            continue
        if x.index in by_index:
            continue
        if actual.alive(x.id):
            by_index[x.index] = x.id
        else:
            status = actual.replicas.get(x.id)
            why = f": {status.reason}" if status and status.reason else ""
            drift.append(f"replica {x.id} of {entity.name} is not running{why}")
    starts = []
    adopts = []
    routed = actual.routed_ids()
    free = iter(candidates)
    for index in range(count):
        if index in by_index:
            continue
        orphan = next(free, None)
        if orphan is not None:
            model = d.models[entity.name]
            adopts.append(Adoption(orphan, index, model, orphan.id in routed))
            continue
        dead = next((x for x in same if x.index == index and x.ready and not x.retired), None)
        if r is None or r.spec is None:
            reason = "new"
        elif forced:
            reason = "replace requested"
        elif dead is not None:
            reason = f"replaces {dead.id}"
        elif any(x.entity == entity.name for x in recorded) and r.generation(entity.name) == gen:
            reason = "scale up"
        else:
            reason = "new"
        starts.append(ReplicaStart(entity, d.models[entity.name], gen, index, reason))
    return _Replicas(tuple(starts), frozenset(by_index.values()), tuple(drift), tuple(adopts))


def _create_or_update(
    d: DesiredEndpoint,
    r: EndpointRecord | None,
    actual: Actual,
    gateway_fresh: bool,
    replace_entities: frozenset[tuple[str, str]] = frozenset(),
    settle_status: bool = True,
) -> EndpointChange:
    recorded = r.replicas if r else ()
    parts = [
        _entity_replicas(d, r, e, actual, (d.spec.name, e.name) in replace_entities)
        for e in d.spec.entities
    ]
    starts = tuple(s for part in parts for s in part.starts)
    adopts = tuple(a for part in parts for a in part.adopts)
    keep = {rid for part in parts for rid in part.keep}
    drift = [text for part in parts for text in part.drift]
    stops = tuple(x.handle for x in recorded if x.id not in keep and actual.alive(x.id))
    forgets = tuple(x.handle for x in recorded if x.id not in keep and not actual.alive(x.id))
    for x in recorded:
        if x.id not in keep and not x.ready and not x.retired and actual.alive(x.id):
            drift.append(f"replica {x.id} was started but never became ready (interrupted apply?)")
    change = EndpointChange(
        name=d.spec.name,
        kind=Change.CREATE,
        provider=d.spec.provider,
        before=r,
        after=d,
        fields=_field_changes(r if r is not None and r.spec is not None else None, d),
        starts=starts,
        stops=stops,
        forgets=forgets,
        adopts=adopts,
        route_push=True,
    )
    if r is None or r.spec is None:
        return replace(change, drift=tuple(drift))
    table_stale = _gateway_table_stale(r, actual)
    if table_stale and not gateway_fresh:
        drift.append(f"the gateway does not route {r.name} as recorded")
    route_push = bool(
        starts
        or adopts
        or stops
        or forgets
        or change.fields
        or table_stale
        or gateway_fresh
        or dict(r.serving) != d.serving
        or (settle_status and r.config_update != NOT_UPDATING)
    )
    return replace(
        change,
        kind=Change.UPDATE if route_push else Change.NOOP,
        route_push=route_push,
        routing_stale=table_stale or gateway_fresh,
        drift=tuple(drift),
    )


def _gateway_table_stale(r: EndpointRecord, actual: Actual) -> bool:
    """True when the gateway's live table does not route `r` as the state says it should."""
    table = actual.gateway_table
    if table is None:
        return True
    return not routes_as_expected(r, table.endpoints.get(r.name))


# -- field changes ----------------------------------------------------------------------

_REPLACE_FIELDS = ("model", "batching")  # batching: the replica server starts otherwise
_RESTART_FIELDS = ("environment_vars", "workload_type")
_SCALE_FIELDS = ("workload_size", "concurrency", "replicas", "scale_to_zero_enabled")


def _entity_view(e: EntitySpec, model: ResolvedModel | None, per_replica: int) -> dict[str, Any]:
    """What the plan shows of an entity; `replicas` is its range ('1', '2..4', '0..4');
    `batching` its micro-batching setting (None: none)."""
    return {
        "model": model.describe() if model else e.model_uri,
        "environment_vars": dict(e.environment_vars),
        "workload_type": e.workload_type,
        "workload_size": e.workload_size,
        "concurrency": e.concurrency_text(),
        "replicas": e.replica_range(per_replica).short(),
        "scale_to_zero_enabled": e.scale_to_zero_enabled,
        "batching": e.batching.to_json() if e.batching else None,
    }


def _field_changes(r: EndpointRecord | None, d: DesiredEndpoint) -> tuple[FieldChange, ...]:
    before_spec = r.spec if r else None
    out: list[FieldChange] = []
    if before_spec is not None and before_spec.provider != d.spec.provider:
        out.append(FieldChange("provider", before_spec.provider, d.spec.provider, Impact.REPLACE))
    before_entities = {e.name: e for e in before_spec.entities} if before_spec else {}
    for e in d.spec.entities:
        after_view = _entity_view(e, d.models.get(e.name), d.per_replica)
        old = before_entities.get(e.name)
        if old is None:
            out.append(FieldChange(f"served_entities[{e.name}]", None, after_view, Impact.REPLACE))
            continue
        assert r is not None
        before_view = _entity_view(old, r.models.get(e.name), d.per_replica)
        for key, after_value in after_view.items():
            before_value = before_view[key]
            if before_value == after_value:
                continue
            if key in _REPLACE_FIELDS:
                impact = Impact.REPLACE
            elif key in _RESTART_FIELDS:
                impact = Impact.ROLLING_RESTART
            elif key in _SCALE_FIELDS:
                impact = Impact.SCALE
            else:
                impact = Impact.LIVE
            out.append(
                FieldChange(f"served_entities[{e.name}].{key}", before_value, after_value, impact)
            )
    for name, old in before_entities.items():
        if all(e.name != name for e in d.spec.entities):
            assert r is not None
            out.append(
                FieldChange(
                    f"served_entities[{name}]",
                    _entity_view(old, r.models.get(name), d.per_replica),
                    None,
                    Impact.REPLACE,
                )
            )
    before_routes = _routes_view(before_spec.routes) if before_spec else {}
    after_routes = _routes_view(d.spec.routes)
    if before_spec is not None and before_routes != after_routes:
        out.append(FieldChange("traffic_config.routes", before_routes, after_routes, Impact.LIVE))
    if before_spec is not None:
        out += _endpoint_field_changes(before_spec, d.spec)
    return tuple(out)


def _endpoint_field_changes(before: EndpointSpec, after: EndpointSpec) -> list[FieldChange]:
    """Tags, rollout, rate limits, autoscaling timings and the recorded Databricks sections:
    all live changes."""
    out: list[FieldChange] = []
    if dict(before.tags) != dict(after.tags):
        out.append(FieldChange("tags", dict(before.tags), dict(after.tags), Impact.LIVE))
    if before.rollout != after.rollout:
        out.append(
            FieldChange("rollout", before.rollout.to_json(), after.rollout.to_json(), Impact.LIVE)
        )
    if before.rate_limits != after.rate_limits:
        out.append(
            FieldChange(
                "rate_limits",
                [r.to_json() for r in before.rate_limits],
                [r.to_json() for r in after.rate_limits],
                Impact.LIVE,
            )
        )
    if before.autoscaling != after.autoscaling:
        out.append(
            FieldChange(
                "autoscaling",
                before.autoscaling.to_json(),
                after.autoscaling.to_json(),
                Impact.LIVE,
            )
        )
    for key in sorted(set(before.extra) | set(after.extra)):
        b, a = before.extra.get(key), after.extra.get(key)
        if b != a:
            out.append(FieldChange(key, b, a, Impact.LIVE))
    return out


def _routes_view(routes: Iterable[Route]) -> dict[str, int]:
    return {r.served_entity_name: r.traffic_percentage for r in routes}
