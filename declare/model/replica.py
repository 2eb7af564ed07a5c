"""What a provider is asked to start (`ReplicaSpec`) and how it names what it started
(`ReplicaHandle`). Data only: the provider boundary's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from declare.model.batching import Batching, batching_from_json
from declare.model.logs import LogSource
from declare.model.resolved import ResolvedModel


@dataclass(frozen=True)
class ReplicaSpec:
    """What a provider is asked to start: one replica of one served entity.

    `generation` is the hash of everything that, when changed, needs new replicas
    (resolved model, environment variables, workload, batching); replicas of one generation
    are interchangeable. `model_env` holds the MLflow settings the replica needs to load the
    model (tracking/registry URI); `environment_vars` the user's variables. `batching`: the
    entity's micro-batching, None when it has none (a provider that cannot batch refuses to
    start a replica with it).
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
    batching: Batching | None = None

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
            "batching": self.batching.to_json() if self.batching else None,
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
            batching=batching_from_json(data.get("batching")),
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
    provider's own JSON-serializable identification (PID and start time, container id, ...);
    `logs` where its log and its build log are read without the provider (None in handles
    recorded before providers wrote one; see `declare.model.logs`).
    """

    id: str
    provider: str
    endpoint: str
    entity: str
    generation: str
    url: str
    data: Mapping[str, Any] = field(default_factory=dict)
    logs: LogSource | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "entity": self.entity,
            "generation": self.generation,
            "url": self.url,
            "data": dict(self.data),
            **({"logs": self.logs.to_json()} if self.logs is not None else {}),
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
            logs=None if data.get("logs") is None else LogSource.from_json(data["logs"]),
        )
