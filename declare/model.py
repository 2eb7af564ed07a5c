"""The core's immutable values: what the manifests ask for and what a provider is asked to run.

These types are shared by every stage (manifests, resolve, diff, plan, apply) and by the
providers and the gateway, which depend on nothing else of the core. They hold data only:
no I/O, no MLflow, no processes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from declare.errors import Location

# Databricks workload sizes and the replica count each maps to on declare's providers.
# Databricks gives each size a concurrency range (Small 0-4, Medium 8-16, Large 16-64
# concurrent requests). One MLflow scoring-server replica with one worker serves about 4
# concurrent requests of a small model before queueing, so: Small -> 1, Medium -> 2,
# Large -> 4 replicas. `replicas:` on a served entity overrides the mapping.
WORKLOAD_REPLICAS: Mapping[str, int] = {"Small": 1, "Medium": 2, "Large": 4}
WORKLOAD_CONCURRENCY: Mapping[str, str] = {"Small": "0-4", "Medium": "8-16", "Large": "16-64"}

WORKLOAD_TYPES = ("CPU", "GPU_SMALL", "GPU_MEDIUM", "GPU_LARGE", "MULTIGPU_MEDIUM")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the input of every content hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(value: Any, length: int = 12) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class ResolvedModel:
    """An MLflow model URI pinned at plan time.

    `uri` is what the manifest wrote; `pinned_uri` names exactly one model
    (`models:/name/3` for a registry alias, or the URI itself when it is already exact).
    `source` is where the artifacts are (a path or URI a scoring server can load).
    """

    uri: str
    pinned_uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    source: str = ""
    # Name of the input-example file inside the model's artifacts, when it has one
    # (MLflow writes serving_input_example.json beside MLmodel).
    input_example: str | None = None
    # Hash of the model's environment (python version + requirements): images are per env.
    env_hash: str = ""
    # The model's signature as MLflow stores it (JSON strings), for review warnings.
    signature: Mapping[str, str] | None = None

    def describe(self) -> str:
        if self.name and self.version:
            pinned = f"{self.name} v{self.version}"
            return f"{pinned} (@{self.alias})" if self.alias else pinned
        return self.pinned_uri

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "pinned_uri": self.pinned_uri,
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "source": self.source,
            "input_example": self.input_example,
            "env_hash": self.env_hash,
            "signature": dict(self.signature) if self.signature else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResolvedModel:
        sig = data.get("signature")
        return cls(
            uri=data["uri"],
            pinned_uri=data["pinned_uri"],
            name=data.get("name"),
            version=data.get("version"),
            alias=data.get("alias"),
            run_id=data.get("run_id"),
            source=data.get("source", ""),
            input_example=data.get("input_example"),
            env_hash=data.get("env_hash", ""),
            signature=dict(sig) if sig else None,
        )


@dataclass(frozen=True)
class EntitySpec:
    """One served entity as the manifest asks for it (normalized).

    `model_uri` is always set: `models:/<entity_name>/<entity_version>` when the manifest used
    the Databricks fields, or the declare `model_uri` as written.
    """

    name: str
    model_uri: str
    entity_name: str | None = None
    entity_version: str | None = None
    workload_size: str = "Small"
    workload_type: str = "CPU"
    scale_to_zero_enabled: bool = False
    environment_vars: Mapping[str, str] = field(default_factory=dict)
    replicas: int | None = None  # declare addition: overrides the workload_size mapping
    location: Location | None = field(default=None, compare=False)

    @property
    def replica_count(self) -> int:
        if self.replicas is not None:
            return self.replicas
        return WORKLOAD_REPLICAS.get(self.workload_size, 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_uri": self.model_uri,
            "entity_name": self.entity_name,
            "entity_version": self.entity_version,
            "workload_size": self.workload_size,
            "workload_type": self.workload_type,
            "scale_to_zero_enabled": self.scale_to_zero_enabled,
            "environment_vars": dict(self.environment_vars),
            "replicas": self.replicas,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EntitySpec:
        return cls(
            name=data["name"],
            model_uri=data["model_uri"],
            entity_name=data.get("entity_name"),
            entity_version=data.get("entity_version"),
            workload_size=data.get("workload_size", "Small"),
            workload_type=data.get("workload_type", "CPU"),
            scale_to_zero_enabled=bool(data.get("scale_to_zero_enabled", False)),
            environment_vars=dict(data.get("environment_vars") or {}),
            replicas=data.get("replicas"),
        )


@dataclass(frozen=True)
class Route:
    """A share of an endpoint's traffic sent to one served entity (by the entity's name)."""

    served_entity_name: str
    traffic_percentage: int

    def to_json(self) -> dict[str, Any]:
        return {
            "served_entity_name": self.served_entity_name,
            "traffic_percentage": self.traffic_percentage,
        }


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint as the manifests ask for it (normalized, models not yet resolved).

    `raw` keeps declare-specific sections that later stages read (e.g. `rollout`) and the
    Databricks fields other stages read (`rate_limits`, enforced by the gateway) or only record
    (`auto_capture_config`, ...).
    """

    name: str
    entities: tuple[EntitySpec, ...]
    routes: tuple[Route, ...]
    provider: str = "local"
    tags: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    location: Location | None = field(default=None, compare=False)

    def entity(self, name: str) -> EntitySpec:
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "served_entities": [e.to_json() for e in self.entities],
            "routes": [r.to_json() for r in self.routes],
            "tags": dict(self.tags),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EndpointSpec:
        return cls(
            name=data["name"],
            provider=data.get("provider", "local"),
            entities=tuple(EntitySpec.from_json(e) for e in data["served_entities"]),
            routes=tuple(
                Route(r["served_entity_name"], int(r["traffic_percentage"])) for r in data["routes"]
            ),
            tags=dict(data.get("tags") or {}),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class ReplicaSpec:
    """What a provider is asked to start: one replica of one served entity.

    `generation` is the hash of everything that, when changed, needs new replicas
    (resolved model, environment variables, workload); replicas of one generation are
    interchangeable. `model_env` holds the MLflow settings the replica needs to load the
    model (tracking/registry URI); `environment_vars` the user's variables.
    """

    project: str
    endpoint: str
    entity: str
    generation: str
    index: int
    model: ResolvedModel
    workload_size: str = "Small"
    workload_type: str = "CPU"
    environment_vars: Mapping[str, str] = field(default_factory=dict)
    model_env: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "endpoint": self.endpoint,
            "entity": self.entity,
            "generation": self.generation,
            "index": self.index,
            "model": self.model.to_json(),
            "workload_size": self.workload_size,
            "workload_type": self.workload_type,
            "environment_vars": dict(self.environment_vars),
            "model_env": dict(self.model_env),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplicaSpec:
        return cls(
            project=data["project"],
            endpoint=data["endpoint"],
            entity=data["entity"],
            generation=data["generation"],
            index=int(data["index"]),
            model=ResolvedModel.from_json(data["model"]),
            workload_size=data.get("workload_size", "Small"),
            workload_type=data.get("workload_type", "CPU"),
            environment_vars=dict(data.get("environment_vars") or {}),
            model_env=dict(data.get("model_env") or {}),
        )

    @property
    def labels(self) -> dict[str, str]:
        return {
            "declare.project": self.project,
            "declare.endpoint": self.endpoint,
            "declare.entity": self.entity,
            "declare.generation": self.generation,
            "declare.index": str(self.index),
        }


@dataclass(frozen=True)
class ReplicaHandle:
    """A running (or once-running) replica, as a provider identifies it.

    `url` is the replica's base URL on loopback (`http://127.0.0.1:PORT`); `data` is the
    provider's own JSON-serializable identification (PID and start time, container id, ...).
    """

    id: str
    provider: str
    endpoint: str
    entity: str
    generation: str
    url: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "entity": self.entity,
            "generation": self.generation,
            "url": self.url,
            "data": dict(self.data),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplicaHandle:
        return cls(
            id=data["id"],
            provider=data["provider"],
            endpoint=data["endpoint"],
            entity=data["entity"],
            generation=data["generation"],
            url=data["url"],
            data=dict(data.get("data") or {}),
        )


@dataclass(frozen=True)
class Guards:
    """Rollback guards, judged by the gateway's figures for the new entities over a bake."""

    max_error_rate: float | None = None
    max_p99_latency_ms: float | None = None
    min_requests: int = 20

    @property
    def any(self) -> bool:
        return self.max_error_rate is not None or self.max_p99_latency_ms is not None

    def rollback_condition(self) -> str:
        """E.g. 'error rate > 0.01 or p99 > 500 ms (judged from 20 requests)'; '' if none."""
        checks = []
        if self.max_error_rate is not None:
            checks.append(f"error rate > {self.max_error_rate:g}")
        if self.max_p99_latency_ms is not None:
            checks.append(f"p99 > {self.max_p99_latency_ms:g} ms")
        if not checks:
            return ""
        return f"{' or '.join(checks)} (judged from {self.min_requests} requests)"

    def to_json(self) -> dict[str, Any]:
        return {
            "max_error_rate": self.max_error_rate,
            "max_p99_latency_ms": self.max_p99_latency_ms,
            "min_requests": self.min_requests,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Guards:
        data = data or {}
        return cls(
            max_error_rate=data.get("max_error_rate"),
            max_p99_latency_ms=data.get("max_p99_latency_ms"),
            min_requests=int(data.get("min_requests") or 20),
        )


@dataclass(frozen=True)
class RolloutPolicy:
    """How a change that starts new replicas reaches 100 % of traffic (manifest `rollout:`).

    `steps` are the percentages of traffic on the new config, increasing, ending at 100;
    all_at_once is the single step (100,).
    """

    strategy: str = "all_at_once"
    steps: tuple[int, ...] = (100,)
    bake_seconds: float = 0.0
    guards: Guards = field(default_factory=Guards)
    deadline_seconds: float | None = None

    @property
    def progressive(self) -> bool:
        return len(self.steps) > 1

    @property
    def bakes(self) -> bool:
        return self.bake_seconds > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "steps": list(self.steps),
            "bake_seconds": self.bake_seconds,
            "guards": self.guards.to_json(),
            "deadline_seconds": self.deadline_seconds,
        }

    @classmethod
    def from_manifest(cls, raw: Mapping[str, Any] | None) -> RolloutPolicy:
        """From the manifest's `rollout:` (already checked by the schema and `rollout_problems`)."""
        raw = raw or {}
        strategy = str(raw.get("strategy", "all_at_once"))
        steps: tuple[int, ...] = (100,)
        if strategy == "canary":
            steps = tuple(int(x) for x in raw.get("steps") or (10, 50, 100))
        elif strategy == "linear":
            size = int(raw.get("step_percentage") or 25)
            steps = (*tuple(range(size, 100, size)), 100)
        deadline = raw.get("deadline_seconds")
        return cls(
            strategy=strategy,
            steps=steps,
            bake_seconds=float(raw.get("bake_seconds") or 0.0),
            guards=Guards.from_json(raw.get("guards")),
            deadline_seconds=float(deadline) if deadline is not None else None,
        )


def rollout_problems(raw: Any) -> list[tuple[tuple[str, ...], str]]:
    """Checks of `rollout:` that a JSON Schema cannot say: (field path, message) pairs."""
    if not isinstance(raw, Mapping):
        return []
    out: list[tuple[tuple[str, ...], str]] = []
    strategy = raw.get("strategy", "all_at_once")
    steps = raw.get("steps")
    if steps is not None and strategy != "canary":
        out.append((("steps",), "is only used with strategy: canary"))
    if raw.get("step_percentage") is not None and strategy != "linear":
        out.append((("step_percentage",), "is only used with strategy: linear"))
    if strategy == "canary" and isinstance(steps, list) and all(isinstance(x, int) for x in steps):
        if any(b <= a for a, b in itertools.pairwise(steps)):
            out.append((("steps",), f"must increase strictly, got {steps}"))
        elif steps and steps[-1] != 100:
            out.append((("steps",), f"must end at 100, got {steps}"))
    if strategy == "linear" and raw.get("step_percentage") == 100:
        out.append((("step_percentage",), "100 is all_at_once; use a smaller step"))
    return out
