"""The routing table: the only thing declare sends to the gateway.

A table is swapped in whole and atomically. Its JSON shape (PUT /_declare/admin/table):

    {
      "version": 7,                       # increases with every push; informational
      "endpoints": {
        "iris": {
          "routes": [                      # traffic_config.routes, percentages sum to 100
            {"served_entity_name": "iris-1", "traffic_percentage": 100}
          ],
          "entities": {                    # the ready replicas of each routed entity
            "iris-1": {"replicas": [{"id": "iris-iris-1-ab12cd", "url": "http://127.0.0.1:5001"}]}
          },                               # optional "served_name" per entity: the name in the
                                           # served-model-name header when the key differs
                                           # (two generations of one entity during a rollout)
          "rate_limits": [                 # optional: Databricks rate limits the gateway
            {"calls": 100, "key": "endpoint", "renewal_period": "minute"}  # enforces (429)
          ],
          "description": {...}             # the endpoint in the Databricks GET shape: name,
                                           # state.ready, state.config_update, config,
                                           # pending_config, tags; served as-is by the
                                           # management API
        }
      }
    }

An entity with no replicas is routed but not ready: its share of requests gets 503.
Parsing validates the shape and raises ValueError with what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from declare.model.limits import RateLimit


@dataclass(frozen=True)
class ReplicaTarget:
    id: str
    url: str


@dataclass(frozen=True)
class EndpointTable:
    name: str
    routes: tuple[tuple[str, int], ...]  # (served entity name, percentage)
    entities: Mapping[str, tuple[ReplicaTarget, ...]]
    description: Mapping[str, Any] = field(default_factory=dict)
    served_names: Mapping[str, str] = field(default_factory=dict)  # entity key -> served name
    rate_limits: tuple[RateLimit, ...] = ()

    def served_name(self, key: str) -> str:
        return self.served_names.get(key, key)

    def to_json(self) -> dict[str, Any]:
        limits = [r.to_json() for r in self.rate_limits]
        return {
            "routes": [{"served_entity_name": n, "traffic_percentage": p} for n, p in self.routes],
            "entities": {
                name: {
                    "replicas": [{"id": r.id, "url": r.url} for r in replicas],
                    **(
                        {"served_name": self.served_names[name]}
                        if name in self.served_names
                        else {}
                    ),
                }
                for name, replicas in self.entities.items()
            },
            **({"rate_limits": limits} if limits else {}),
            "description": dict(self.description),
        }


@dataclass(frozen=True)
class RoutingTable:
    version: int
    endpoints: Mapping[str, EndpointTable]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "endpoints": {name: ep.to_json() for name, ep in self.endpoints.items()},
        }

    @classmethod
    def empty(cls) -> RoutingTable:
        return cls(version=0, endpoints={})

    @classmethod
    def from_json(cls, data: Any) -> RoutingTable:
        if not isinstance(data, dict):
            raise ValueError("routing table must be a JSON object")
        version = data.get("version", 0)
        if not isinstance(version, int):
            raise ValueError("version must be an integer")
        raw_eps = data.get("endpoints", {})
        if not isinstance(raw_eps, dict):
            raise ValueError("endpoints must be an object")
        endpoints: dict[str, EndpointTable] = {}
        for name, ep in raw_eps.items():
            if not isinstance(ep, dict):
                raise ValueError(f"endpoints.{name} must be an object")
            routes: list[tuple[str, int]] = []
            for i, r in enumerate(ep.get("routes", [])):
                try:
                    routes.append((str(r["served_entity_name"]), int(r["traffic_percentage"])))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"endpoints.{name}.routes[{i}] is malformed") from exc
            if routes and sum(p for _, p in routes) != 100:
                raise ValueError(f"endpoints.{name}.routes percentages must sum to 100")
            entities: dict[str, tuple[ReplicaTarget, ...]] = {}
            served_names: dict[str, str] = {}
            for ent, body in (ep.get("entities") or {}).items():
                try:
                    entities[ent] = tuple(
                        ReplicaTarget(str(x["id"]), str(x["url"])) for x in body["replicas"]
                    )
                    if body.get("served_name") is not None:
                        served_names[ent] = str(body["served_name"])
                except (KeyError, TypeError, AttributeError) as exc:
                    raise ValueError(f"endpoints.{name}.entities.{ent} is malformed") from exc
            desc = ep.get("description") or {}
            if not isinstance(desc, dict):
                raise ValueError(f"endpoints.{name}.description must be an object")
            raw_limits = ep.get("rate_limits") or []
            if not isinstance(raw_limits, list):
                raise ValueError(f"endpoints.{name}.rate_limits must be a list")
            limits: list[RateLimit] = []
            for i, raw in enumerate(raw_limits):
                try:
                    limits.append(RateLimit.from_json(raw))
                except ValueError as exc:
                    raise ValueError(f"endpoints.{name}.rate_limits[{i}]: {exc}") from None
            endpoints[name] = EndpointTable(
                name, tuple(routes), entities, desc, served_names, tuple(limits)
            )
        return cls(version=version, endpoints=endpoints)
