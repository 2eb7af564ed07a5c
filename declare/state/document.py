"""The recorded state as typed, immutable values, and its JSON form.

The storage layer (`backend.py`, `local.py`) moves plain JSON documents and owns `serial`
and `lineage`; this module gives that document its meaning:

    {
      "format_version": 1, "serial": 12, "lineage": "...",
      "gateway": {"host": "127.0.0.1", "port": 8787, "settings_hash": "..."} | null,
      "runtime": {"settings_hash": "..."} | null,
      "endpoints": {
        "<name>": {
          "name", "provider", "config_version", "created_at", "updated_at",
          "spec": <EndpointSpec JSON> | null,       # the config that was last applied in full
          "models": {"<entity>": <ResolvedModel JSON>},   # pinned models of `spec`'s entities
          "routes": [<Route JSON>],                  # what the gateway routes now
          "serving": {"<entity>": "<generation>"},   # which generation each route reaches
          "split": [["<entity>", "<generation>", 10], ...],  # during a progressive rollout:
                                                     # the traffic split now (overrides routes)
          "shadow": {"entity", "generation", "percent", "tolerance",
                     "model_name", "model_version"} | null,
                                                     # during a shadow step: the new entity
                                                     # live requests are mirrored to
          "replicas": [<ReplicaRecord JSON>],        # every replica started and not yet stopped
          "status": {"config_update": "NOT_UPDATING"|"IN_PROGRESS"|"UPDATE_FAILED",
                     "message": str},
          "pending": <EndpointSpec JSON> | null,     # the config being applied now
          "scale": {...}, "events": [...]            # the runtime's (declare.state.scaling)
        }
      }
    }

The `from_json` methods trust the document's shape: `declare.state.schema` checks every field
against schemas/state.schema.json first. Functions here are pure: each returns a new value.
Nothing here does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from declare.model import EndpointSpec, ReplicaHandle, ResolvedModel, Route, short_hash
from declare.state.scaling import EntityScale, ScaleEvent, kept_events

FORMAT_VERSION = 1

NOT_UPDATING = "NOT_UPDATING"
IN_PROGRESS = "IN_PROGRESS"
UPDATE_FAILED = "UPDATE_FAILED"


def generation_of(provider: str, model: ResolvedModel, entity_json: Mapping[str, Any]) -> str:
    """The hash of what, when it changes, needs new replicas of a served entity.

    Replica count is not part of it: scaling adds or removes replicas of one generation.
    `batching` (how the replica server is started) is, and only when set: an entity without
    it keeps the generation it had before batching existed, so its replicas are not replaced.
    """
    inputs: dict[str, Any] = {
        "provider": provider,
        "model": model.pinned_uri,
        "source": model.source,
        "env": entity_json.get("environment_vars") or {},
        "workload_type": entity_json.get("workload_type", "CPU"),
    }
    if entity_json.get("batching"):
        inputs["batching"] = entity_json["batching"]
    return short_hash(inputs)


@dataclass(frozen=True)
class ReplicaRecord:
    handle: ReplicaHandle
    index: int
    ready: bool = False  # passed the readiness check (a real prediction)
    retired: bool = False  # taken out of rotation: to be drained and stopped
    started_at: float = 0.0  # unix seconds (0: recorded before declare kept it)

    @property
    def id(self) -> str:
        return self.handle.id

    @property
    def entity(self) -> str:
        return self.handle.entity

    @property
    def generation(self) -> str:
        return self.handle.generation

    def to_json(self) -> dict[str, Any]:
        return {
            "handle": self.handle.to_json(),
            "index": self.index,
            "ready": self.ready,
            "retired": self.retired,
            "started_at": self.started_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplicaRecord:
        return cls(
            ReplicaHandle.from_json(data["handle"]),
            int(data["index"]),
            bool(data.get("ready", False)),
            bool(data.get("retired", False)),
            float(data.get("started_at", 0.0)),
        )


@dataclass(frozen=True)
class ShadowRoute:
    """A shadow step under way: `percent` of the endpoint's live requests mirrored to
    `entity` of `generation` (its answers compared within `tolerance`, never returned)."""

    entity: str
    generation: str
    percent: int
    tolerance: float
    model_name: str | None = None  # the registered model it serves, for captured rows
    model_version: str | None = None

    @property
    def key(self) -> str:
        """The gateway's name for the mirrored target (its figures are reported under it)."""
        return f"{self.entity}@{self.generation[:8]}"

    def to_json(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "generation": self.generation,
            "percent": self.percent,
            "tolerance": self.tolerance,
            "model_name": self.model_name,
            "model_version": self.model_version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShadowRoute:
        return cls(
            str(data["entity"]),
            str(data["generation"]),
            int(data["percent"]),
            float(data["tolerance"]),
            None if data.get("model_name") is None else str(data["model_name"]),
            None if data.get("model_version") is None else str(data["model_version"]),
        )


@dataclass(frozen=True)
class EndpointRecord:
    name: str
    provider: str
    spec: EndpointSpec | None = None
    models: Mapping[str, ResolvedModel] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    serving: Mapping[str, str] = field(default_factory=dict)
    split: tuple[tuple[str, str, int], ...] = ()
    shadow: ShadowRoute | None = None
    replicas: tuple[ReplicaRecord, ...] = ()
    config_update: str = NOT_UPDATING
    message: str = ""
    pending: EndpointSpec | None = None
    config_version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    scale: Mapping[str, EntityScale] = field(default_factory=dict)  # by entity: the runtime's
    events: tuple[ScaleEvent, ...] = ()  # the runtime's recent decisions, newest last

    def generation(self, entity: str) -> str | None:
        """Generation of `entity` in the applied spec (None when not in it)."""
        if self.spec is None or entity not in self.models:
            return None
        try:
            ent = self.spec.entity(entity)
        except KeyError:
            return None
        return generation_of(self.provider, self.models[entity], ent.to_json())

    def serving_replicas(
        self, entity: str, generation: str | None = None
    ) -> tuple[ReplicaRecord, ...]:
        """Replicas in rotation for `entity` (of `generation`, default: the one it serves)."""
        gen = generation if generation is not None else self.serving.get(entity)
        return tuple(
            r
            for r in self.replicas
            if r.entity == entity and r.generation == gen and r.ready and not r.retired
        )

    def current_count(self, entity: str, generation: str) -> int | None:
        """The replicas `entity` runs for `generation` now: the runtime's recorded target,
        else those in rotation; None when it serves nothing of that generation."""
        scale = self.scale.get(entity)
        if scale is not None and scale.generation == generation:
            return scale.target
        serving = self.serving_replicas(entity, generation)
        return len(serving) if serving else None

    def carrying_count(self) -> int | None:
        """The count of the entity that carries the most traffic now (None: no traffic)."""
        shares = [(pct, e, g) for e, g, pct in self.traffic() if pct > 0]
        if not shares:
            return None
        _, entity, generation = max(shares)
        return self.current_count(entity, generation)

    def with_scale(self, entity: str, scale: EntityScale, event: ScaleEvent) -> EndpointRecord:
        """A decision of the runtime for `entity`, recorded with its reason."""
        return replace(
            self,
            scale={**self.scale, entity: scale},
            events=kept_events(self.events, event),
        )

    def with_event(self, event: ScaleEvent) -> EndpointRecord:
        return replace(self, events=kept_events(self.events, event))

    def traffic(self) -> tuple[tuple[str, str, int], ...]:
        """The split traffic follows now: (entity, generation, percentage) per target."""
        if self.split:
            return self.split
        return tuple(
            (r.served_entity_name, self.serving.get(r.served_entity_name, ""), r.traffic_percentage)
            for r in self.routes
        )

    # -- pure updates -------------------------------------------------------------------

    def with_replica(self, replica: ReplicaRecord) -> EndpointRecord:
        return replace(self, replicas=(*self.replicas, replica))

    def without_replica(self, replica_id: str) -> EndpointRecord:
        return replace(self, replicas=tuple(x for x in self.replicas if x.id != replica_id))

    def with_ready(self, replica_id: str) -> EndpointRecord:
        """The replica passed its readiness check."""
        return replace(
            self,
            replicas=tuple(
                replace(x, ready=True) if x.id == replica_id else x for x in self.replicas
            ),
        )

    def with_status(
        self, config_update: str, message: str = "", pending: EndpointSpec | None = None
    ) -> EndpointRecord:
        return replace(self, config_update=config_update, message=message, pending=pending)

    def bump_version(self) -> EndpointRecord:
        """A config applied in full: the next config version."""
        return replace(self, config_version=self.config_version + 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "config_version": self.config_version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "spec": self.spec.to_json() if self.spec else None,
            "models": {k: m.to_json() for k, m in self.models.items()},
            "routes": [r.to_json() for r in self.routes],
            "serving": dict(self.serving),
            "split": [list(t) for t in self.split],
            **({"shadow": self.shadow.to_json()} if self.shadow else {}),
            "replicas": [r.to_json() for r in self.replicas],
            "status": {"config_update": self.config_update, "message": self.message},
            "pending": self.pending.to_json() if self.pending else None,
            "scale": {k: v.to_json() for k, v in sorted(self.scale.items())},
            "events": [e.to_json() for e in self.events],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EndpointRecord:
        status = data.get("status") or {}
        return cls(
            name=data["name"],
            provider=data["provider"],
            spec=EndpointSpec.from_json(data["spec"]) if data.get("spec") else None,
            models={k: ResolvedModel.from_json(v) for k, v in (data.get("models") or {}).items()},
            routes=tuple(
                Route(r["served_entity_name"], int(r["traffic_percentage"]))
                for r in data.get("routes") or []
            ),
            serving=dict(data.get("serving") or {}),
            split=tuple((str(e), str(g), int(p)) for e, g, p in data.get("split") or []),
            shadow=ShadowRoute.from_json(data["shadow"]) if data.get("shadow") else None,
            replicas=tuple(ReplicaRecord.from_json(r) for r in data.get("replicas") or []),
            config_update=status.get("config_update", NOT_UPDATING),
            message=status.get("message", ""),
            pending=EndpointSpec.from_json(data["pending"]) if data.get("pending") else None,
            config_version=int(data.get("config_version", 0)),
            created_at=float(data.get("created_at", 0.0)),
            updated_at=float(data.get("updated_at", 0.0)),
            scale={k: EntityScale.from_json(v) for k, v in (data.get("scale") or {}).items()},
            events=tuple(ScaleEvent.from_json(e) for e in data.get("events") or []),
        )


@dataclass(frozen=True)
class RecordedGateway:
    """The gateway as the state records it: where it listens, the hash of its settings."""

    host: str
    port: int
    settings_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "settings_hash": self.settings_hash}


@dataclass(frozen=True)
class RecordedRuntime:
    """The runtime as the state records it: the hash of what it was started with."""

    settings_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"settings_hash": self.settings_hash}


@dataclass(frozen=True)
class State:
    serial: int = 0
    lineage: str = ""
    endpoints: Mapping[str, EndpointRecord] = field(default_factory=dict)
    gateway: RecordedGateway | None = None
    runtime: RecordedRuntime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "serial": self.serial,
            "lineage": self.lineage,
            "gateway": self.gateway.to_json() if self.gateway else None,
            "runtime": self.runtime.to_json() if self.runtime else None,
            "endpoints": {name: ep.to_json() for name, ep in sorted(self.endpoints.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> State:
        if not data:
            return cls()
        gw = data.get("gateway")
        rt = data.get("runtime")
        return cls(
            serial=int(data.get("serial", 0)),
            lineage=str(data.get("lineage", "")),
            endpoints={
                name: EndpointRecord.from_json(ep)
                for name, ep in (data.get("endpoints") or {}).items()
            },
            gateway=RecordedGateway(gw["host"], int(gw["port"]), gw["settings_hash"])
            if gw
            else None,
            runtime=RecordedRuntime(str(rt["settings_hash"])) if rt else None,
        )

    # -- pure updates -------------------------------------------------------------------

    def with_endpoint(self, record: EndpointRecord) -> State:
        endpoints = dict(self.endpoints)
        endpoints[record.name] = replace(record, updated_at=time.time())
        return replace(self, endpoints=endpoints)

    def without_endpoint(self, name: str) -> State:
        endpoints = {k: v for k, v in self.endpoints.items() if k != name}
        return replace(self, endpoints=endpoints)

    def endpoint(self, name: str, provider: str = "local") -> EndpointRecord:
        existing = self.endpoints.get(name)
        if existing is not None:
            return existing
        now = time.time()
        return EndpointRecord(name=name, provider=provider, created_at=now, updated_at=now)

    def all_replicas(self) -> tuple[ReplicaRecord, ...]:
        return tuple(r for ep in self.endpoints.values() for r in ep.replicas)
