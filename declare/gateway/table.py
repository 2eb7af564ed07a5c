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
                                           # (two generations of one entity during a rollout);
                                           # optional "model": {"name", "version"}, the
                                           # registered model it serves (for captured rows);
                                           # optional "logs" per replica: where its log is,
                                           # {"file": path} or {"engine": url, "container":
                                           # id} (declare.model.logs); optional "build_log"
                                           # per entity: {"file": path} or {"text": line}
          "capture": {                     # optional: every request goes to this inference
            "catalog_name": "main",        # table, below the gateway's capture root
            "schema_name": "default",      # (declare.model.capture)
            "table_name_prefix": "iris"
          },
          "rate_limits": [                 # optional: Databricks rate limits the gateway
            {"calls": 100, "key": "endpoint", "renewal_period": "minute"}  # enforces (429)
          ],
          "hold_seconds": 60,              # optional, default 0: how long a request whose
                                           # entity has no usable replica waits for one
                                           # (then 503); 0 answers 503 at once
          "shadow": {                      # optional: a share of the requests a replica
            "key": "iris-2@ab12cd34",      # answered goes to a candidate too; its answers
            "served_name": "iris-2",       # are compared and measured, never returned
            "percent": 10,                 # (shadow.py). key: not one of the entities'
            "tolerance": 1e-6,             # keys; percent: 1 to 100; tolerance (>= 0,
                                           # default 0): of the numbers' comparison
            "replicas": [{"id": "iris-iris-2-ef56", "url": "http://127.0.0.1:5002"}],
            "model": {"name": "iris", "version": "2"}   # optional, as for an entity
          },
          "description": {...}             # the endpoint in the Databricks GET shape: name,
                                           # state.ready, state.config_update, config,
                                           # pending_config, tags; served as-is by the
                                           # management API
        }
      }
    }

An entity with no replicas is routed but not ready: its share of requests gets 503, or waits
up to `hold_seconds` for a push that gives it a replica (see `hold.py`).
Parsing validates the shape and raises ValueError with what is wrong. This module holds
values only: it does no I/O and keeps no counters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from declare.model.capture import CaptureTarget
from declare.model.limits import RateLimit
from declare.model.logs import BuildLog, LogSource


@dataclass(frozen=True)
class ReplicaTarget:
    """One ready replica: its id (unique in the table) and base URL; where its log is."""

    id: str
    url: str
    logs: LogSource | None = None

    def to_json(self) -> dict[str, Any]:
        logs = {"logs": self.logs.to_json()} if self.logs is not None else {}
        return {"id": self.id, "url": self.url, **logs}


@dataclass(frozen=True)
class ServedModel:
    """The registered model an entity serves, as captured rows name it (both may be None)."""

    name: str | None = None
    version: str | None = None

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("name", self.name), ("version", self.version)) if v is not None}


@dataclass(frozen=True)
class ShadowTarget:
    """A candidate that gets a copy of `percent` % of the endpoint's answered requests.

    `key` names it in the metrics (distinct from the endpoint's entity keys), `served_name`
    is its served entity name, `tolerance` the numeric tolerance of the comparison of its
    answers with the users' (`declare.model.agreement`).
    """

    key: str
    served_name: str
    percent: int
    tolerance: float
    replicas: tuple[ReplicaTarget, ...]
    model: ServedModel = ServedModel()

    def to_json(self) -> dict[str, Any]:
        model = self.model.to_json()
        return {
            "key": self.key,
            "served_name": self.served_name,
            "percent": self.percent,
            "tolerance": self.tolerance,
            "replicas": [{"id": r.id, "url": r.url} for r in self.replicas],
            **({"model": model} if model else {}),
        }


@dataclass(frozen=True)
class EndpointTable:
    """One endpoint of the table: routes, replicas per entity, limits, hold, description."""

    name: str
    routes: tuple[tuple[str, int], ...]  # (served entity name, percentage)
    entities: Mapping[str, tuple[ReplicaTarget, ...]]
    description: Mapping[str, Any] = field(default_factory=dict)
    served_names: Mapping[str, str] = field(default_factory=dict)  # entity key -> served name
    rate_limits: tuple[RateLimit, ...] = ()
    hold_seconds: float = 0.0  # how long a request waits for a replica of its entity
    capture: CaptureTarget | None = None  # its inference table, when it captures
    models: Mapping[str, ServedModel] = field(default_factory=dict)  # entity key -> model
    shadow: ShadowTarget | None = None  # the candidate mirrored to, during a shadow step
    build_logs: Mapping[str, BuildLog] = field(default_factory=dict)  # entity key -> build log

    def served_name(self, key: str) -> str:
        return self.served_names.get(key, key)

    def to_json(self) -> dict[str, Any]:
        limits = [r.to_json() for r in self.rate_limits]
        return {
            "routes": [{"served_entity_name": n, "traffic_percentage": p} for n, p in self.routes],
            "entities": {
                name: {
                    "replicas": [r.to_json() for r in replicas],
                    **(
                        {"served_name": self.served_names[name]}
                        if name in self.served_names
                        else {}
                    ),
                    **(
                        {"model": self.models[name].to_json()}
                        if self.models.get(name, ServedModel()).to_json()
                        else {}
                    ),
                    **(
                        {"build_log": self.build_logs[name].to_json()}
                        if name in self.build_logs
                        else {}
                    ),
                }
                for name, replicas in self.entities.items()
            },
            **({"rate_limits": limits} if limits else {}),
            **({"hold_seconds": self.hold_seconds} if self.hold_seconds > 0 else {}),
            **({"capture": self.capture.to_json()} if self.capture is not None else {}),
            **({"shadow": self.shadow.to_json()} if self.shadow is not None else {}),
            "description": dict(self.description),
        }


@dataclass(frozen=True)
class RoutingTable:
    """The whole table: a version and the endpoints by name."""

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
        endpoints = {name: parse_endpoint(name, ep) for name, ep in raw_eps.items()}
        return cls(version=version, endpoints=endpoints)


def parse_endpoint(name: str, ep: Any) -> EndpointTable:
    """One endpoint of the table's JSON; ValueError saying what is wrong."""
    if not isinstance(ep, dict):
        raise ValueError(f"endpoints.{name} must be an object")
    desc = ep.get("description") or {}
    if not isinstance(desc, dict):
        raise ValueError(f"endpoints.{name}.description must be an object")
    entities, served_names, models, build_logs = _parse_entities(name, ep.get("entities") or {})
    capture = None
    if ep.get("capture") is not None:
        try:
            capture = CaptureTarget.from_json(ep["capture"])
        except ValueError as exc:
            raise ValueError(f"endpoints.{name}.{exc}") from None
    return EndpointTable(
        name,
        _parse_routes(name, ep.get("routes", [])),
        entities,
        desc,
        served_names,
        _parse_limits(name, ep.get("rate_limits") or []),
        hold_seconds=parse_hold_seconds(name, ep.get("hold_seconds")),
        capture=capture,
        models=models,
        shadow=parse_shadow(name, ep.get("shadow"), entities),
        build_logs=build_logs,
    )


def _parse_routes(name: str, raw: Any) -> tuple[tuple[str, int], ...]:
    routes: list[tuple[str, int]] = []
    for i, r in enumerate(raw):
        try:
            routes.append((str(r["served_entity_name"]), int(r["traffic_percentage"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"endpoints.{name}.routes[{i}] is malformed") from exc
    if routes and sum(p for _, p in routes) != 100:
        raise ValueError(f"endpoints.{name}.routes percentages must sum to 100")
    return tuple(routes)


def _parse_entities(
    name: str, raw: Any
) -> tuple[
    dict[str, tuple[ReplicaTarget, ...]],
    dict[str, str],
    dict[str, ServedModel],
    dict[str, BuildLog],
]:
    entities: dict[str, tuple[ReplicaTarget, ...]] = {}
    served_names: dict[str, str] = {}
    models: dict[str, ServedModel] = {}
    build_logs: dict[str, BuildLog] = {}
    try:
        items = list(raw.items())
    except AttributeError as exc:
        raise ValueError(f"endpoints.{name}.entities must be an object") from exc
    for ent, body in items:
        try:
            entities[ent] = tuple(_parse_replica(x) for x in body["replicas"])
            if body.get("build_log") is not None:
                build_logs[ent] = BuildLog.from_json(body["build_log"])
            if body.get("served_name") is not None:
                served_names[ent] = str(body["served_name"])
            model = body.get("model")
            if model is not None:
                models[ent] = ServedModel(
                    None if model.get("name") is None else str(model["name"]),
                    None if model.get("version") is None else str(model["version"]),
                )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"endpoints.{name}.entities.{ent} is malformed") from exc
    return entities, served_names, models, build_logs


def _parse_replica(raw: Any) -> ReplicaTarget:
    logs = raw.get("logs")
    return ReplicaTarget(
        str(raw["id"]), str(raw["url"]), None if logs is None else LogSource.from_json(logs)
    )


def _parse_limits(name: str, raw: Any) -> tuple[RateLimit, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"endpoints.{name}.rate_limits must be a list")
    limits: list[RateLimit] = []
    for i, item in enumerate(raw):
        try:
            limits.append(RateLimit.from_json(item))
        except ValueError as exc:
            raise ValueError(f"endpoints.{name}.rate_limits[{i}]: {exc}") from None
    return tuple(limits)


def parse_hold_seconds(name: str, raw: Any) -> float:
    """`hold_seconds` of endpoint `name`: a finite number >= 0; absent or null is 0."""
    if raw is None:
        return 0.0
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | float)
        or not math.isfinite(raw)
        or raw < 0
    ):
        raise ValueError(f"endpoints.{name}.hold_seconds must be a number >= 0, got {raw!r}")
    return float(raw)


def parse_shadow(
    name: str, raw: Any, entities: Mapping[str, tuple[ReplicaTarget, ...]]
) -> ShadowTarget | None:
    """`shadow` of endpoint `name`; absent or null is None. ValueError naming the field."""
    if raw is None:
        return None
    where = f"endpoints.{name}.shadow"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object")
    key, served_name = _text(where, raw, "key"), _text(where, raw, "served_name")
    if key in entities:
        raise ValueError(f"{where}.key {key!r} must differ from the endpoint's entity keys")
    percent = raw.get("percent")
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise ValueError(f"{where}.percent must be an integer from 1 to 100, got {percent!r}")
    tolerance = raw.get("tolerance", 0.0)
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not math.isfinite(tolerance)
        or tolerance < 0
    ):
        raise ValueError(f"{where}.tolerance must be a number >= 0, got {tolerance!r}")
    return ShadowTarget(
        key,
        served_name,
        percent,
        float(tolerance),
        _parse_shadow_replicas(where, raw.get("replicas")),
        _parse_shadow_model(where, raw.get("model")),
    )


def _text(where: str, raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.{name} must be a non-empty string, got {value!r}")
    return value


def _parse_shadow_replicas(where: str, raw: Any) -> tuple[ReplicaTarget, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}.replicas must be a non-empty list of {{id, url}}")
    replicas: list[ReplicaTarget] = []
    for i, item in enumerate(raw):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("id"), str)
            or not isinstance(item.get("url"), str)
            or not item["url"].startswith(("http://", "https://"))
        ):
            raise ValueError(f"{where}.replicas[{i}] must be {{id, url}} with an http:// url")
        replicas.append(ReplicaTarget(item["id"], item["url"]))
    return tuple(replicas)


def _parse_shadow_model(where: str, raw: Any) -> ServedModel:
    if raw is None:
        return ServedModel()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}.model must be an object with name and version")
    name, version = raw.get("name"), raw.get("version")
    return ServedModel(
        None if name is None else str(name), None if version is None else str(version)
    )
