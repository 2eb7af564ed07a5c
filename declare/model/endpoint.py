"""An endpoint as the manifests ask for it: served entities, routes, rollout, rate limits.

`EndpointSpec` is normalized by `declare.manifests` (the only reader of manifest text) and
recorded in the state; its JSON form is read back here, including states written before
`rollout` and the rate limits were stored typed (they were then kept raw in `extra`).
Data only: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from declare.errors import Location
from declare.model.batching import Batching, batching_from_json
from declare.model.capture import CaptureTarget, capture_target
from declare.model.limits import RateLimit, limits_from_json, manifest_limits
from declare.model.rollout import RolloutPolicy
from declare.model.scaling import (
    DEFAULT_REPLICA_CONCURRENCY,
    WORKLOAD_CONCURRENCY_RANGE,
    AutoscalePolicy,
    ReplicaRange,
    concurrency_range,
    replica_range,
)

# Databricks workload sizes are ranges of provisioned concurrency (`declare.model.scaling`:
# Small 4, Medium 8-16, Large 16-64 concurrent requests; from 0 with scale to zero), which
# the runtime turns into a range of replicas.
WORKLOAD_SIZES = tuple(WORKLOAD_CONCURRENCY_RANGE)

WORKLOAD_TYPES = ("CPU", "GPU_SMALL", "GPU_MEDIUM", "GPU_LARGE", "MULTIGPU_MEDIUM")


@dataclass(frozen=True)
class EntitySpec:
    """One served entity as the manifest asks for it (normalized).

    `model_uri` is always set: `models:/<entity_name>/<entity_version>` when the manifest used
    the Databricks fields, or the declare `model_uri` as written. `batching` is None unless
    the manifest opts in (and in records written before it existed).
    """

    name: str
    model_uri: str
    entity_name: str | None = None
    entity_version: str | None = None
    workload_size: str = "Small"
    workload_type: str = "CPU"
    scale_to_zero_enabled: bool = False
    environment_vars: Mapping[str, str] = field(default_factory=dict)
    replicas: int | None = None  # declare addition: pins the replica count
    # Databricks' explicit form of the range (instead of workload_size), multiples of 4
    min_provisioned_concurrency: int | None = None
    max_provisioned_concurrency: int | None = None
    batching: Batching | None = None  # declare addition: micro-batching, opt-in
    location: Location | None = field(default=None, compare=False)

    def concurrency(self) -> tuple[int, int]:
        """The provisioned concurrency asked for: (low, high)."""
        return concurrency_range(
            self.workload_size,
            self.min_provisioned_concurrency,
            self.max_provisioned_concurrency,
            self.scale_to_zero_enabled,
        )

    def concurrency_text(self) -> str:
        """'4 concurrent', '8-16 concurrent', '0-4 concurrent' (with scale to zero)."""
        low, high = self.concurrency()
        return f"{high} concurrent" if low == high else f"{low}-{high} concurrent"

    def replica_range(self, per_replica: int = DEFAULT_REPLICA_CONCURRENCY) -> ReplicaRange:
        """The replicas it may run, for a provider whose replica serves `per_replica`."""
        return replica_range(
            self.concurrency(), self.replicas, self.scale_to_zero_enabled, per_replica
        )

    @property
    def replica_count(self) -> int:
        """The replicas it starts with: the bottom of its range, at least one."""
        return self.replica_range().initial

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
            "min_provisioned_concurrency": self.min_provisioned_concurrency,
            "max_provisioned_concurrency": self.max_provisioned_concurrency,
            "batching": self.batching.to_json() if self.batching else None,
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
            min_provisioned_concurrency=data.get("min_provisioned_concurrency"),
            max_provisioned_concurrency=data.get("max_provisioned_concurrency"),
            batching=batching_from_json(data.get("batching")),
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

    `rollout` and the rate limits the gateway enforces are parsed once, at load:
    `rate_limits` from the top-level Databricks field, `ai_gateway_rate_limits` from the
    enforced entries of `ai_gateway.rate_limits`. `extra` keeps, raw, the Databricks
    sections declare records but does not act on (`ai_gateway`, `auto_capture_config`,
    `description`, ...), so a change to them shows in the plan.
    """

    name: str
    entities: tuple[EntitySpec, ...]
    routes: tuple[Route, ...]
    provider: str = "local"
    tags: Mapping[str, str] = field(default_factory=dict)
    rollout: RolloutPolicy = field(default_factory=RolloutPolicy)
    autoscaling: AutoscalePolicy = field(default_factory=AutoscalePolicy)
    rate_limits: tuple[RateLimit, ...] = ()
    ai_gateway_rate_limits: tuple[RateLimit, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    location: Location | None = field(default=None, compare=False)

    def entity(self, name: str) -> EntitySpec:
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(name)

    @property
    def capture(self) -> CaptureTarget | None:
        """The inference table its requests go to, when `auto_capture_config` (or
        `ai_gateway.inference_table_config`) is enabled."""
        return capture_target(self.extra, self.name)

    @property
    def enforced_limits(self) -> tuple[RateLimit, ...]:
        """Every limit the gateway enforces for this endpoint."""
        return (*self.rate_limits, *self.ai_gateway_rate_limits)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "served_entities": [e.to_json() for e in self.entities],
            "routes": [r.to_json() for r in self.routes],
            "tags": dict(self.tags),
            "rollout": self.rollout.to_json(),
            "autoscaling": self.autoscaling.to_json(),
            "rate_limits": [r.to_json() for r in self.rate_limits],
            "ai_gateway_rate_limits": [r.to_json() for r in self.ai_gateway_rate_limits],
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EndpointSpec:
        extra = dict(data.get("extra") or {})
        if "rollout" in data:
            rollout = RolloutPolicy.from_json(data["rollout"] or {})
            top = limits_from_json(data.get("rate_limits"))
            nested = limits_from_json(data.get("ai_gateway_rate_limits"))
        else:  # recorded before they were typed: parsed from the raw sections, once
            rollout = RolloutPolicy.from_manifest(extra.pop("rollout", None))
            limits = manifest_limits(extra)
            extra.pop("rate_limits", None)
            top, nested = limits.top, limits.ai_gateway
        return cls(
            name=data["name"],
            provider=data.get("provider", "local"),
            entities=tuple(EntitySpec.from_json(e) for e in data["served_entities"]),
            routes=tuple(
                Route(r["served_entity_name"], int(r["traffic_percentage"])) for r in data["routes"]
            ),
            tags=dict(data.get("tags") or {}),
            rollout=rollout,
            autoscaling=AutoscalePolicy.from_json(data.get("autoscaling")),
            rate_limits=top,
            ai_gateway_rate_limits=nested,
            extra=extra,
        )
