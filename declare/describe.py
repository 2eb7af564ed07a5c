"""An endpoint record in the shape of Databricks' `GET /api/2.0/serving-endpoints/{name}`.

The gateway serves this description as it is (it arrives in the routing table) and
`declare status` prints it. A served entity's `batching`, a declare addition, is shown only
when it is set. Pure functions of an `EndpointRecord`; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from declare.model import EndpointSpec, EntitySpec
from declare.state.document import NOT_UPDATING, EndpointRecord
from declare.state.scaling import utc


def is_ready(record: EndpointRecord, alive: Callable[[str], bool] = lambda _: True) -> bool:
    """READY when every routed entity has a replica in rotation, or was scaled to zero (the
    next request wakes it). `alive(replica id)`: what a refresh saw (`declare status`); by
    default what the state records."""
    return bool(record.routes) and all(
        any(alive(x.id) for x in record.serving_replicas(entity, generation))
        or _at_zero(record, entity, generation)
        for entity, generation, pct in record.traffic()
        if pct > 0
    )


def _at_zero(record: EndpointRecord, entity: str, generation: str) -> bool:
    scale = record.scale.get(entity)
    return scale is not None and scale.generation == generation and scale.scaled_to_zero


def entity_state(record: EndpointRecord, entity: str) -> dict[str, str]:
    """A served entity's `state`, as Databricks shows it, from what the runtime recorded."""
    in_rotation = record.serving_replicas(entity)
    scale = record.scale.get(entity)
    generation = record.serving.get(entity, "")
    if scale is not None and scale.generation == generation:
        if scale.failures and not in_rotation:
            return {
                "deployment": "DEPLOYMENT_RECOVERING",
                "deployment_state_message": scale.crash_text(),
            }
        if scale.scaled_to_zero:
            since = utc(scale.zero_since) if scale.zero_since else "now"
            return {
                "deployment": "DEPLOYMENT_READY",
                "deployment_state_message": f"scaled to zero since {since}; the next request "
                "wakes it",
            }
    return {
        "deployment": "DEPLOYMENT_READY" if in_rotation else "DEPLOYMENT_CREATING",
        "deployment_state_message": f"{len(in_rotation)} replica(s) in rotation",
    }


def _config(spec: EndpointSpec, record: EndpointRecord, version: int) -> dict[str, Any]:
    entities = []
    for e in spec.entities:
        model = record.models.get(e.name)
        entities.append(
            {
                "name": e.name,
                "entity_name": e.entity_name or (model.name if model else None),
                "entity_version": e.entity_version or (model.version if model else None),
                "workload_size": e.workload_size,
                "workload_type": e.workload_type,
                "scale_to_zero_enabled": e.scale_to_zero_enabled,
                "environment_vars": {k: "{{redacted}}" for k in e.environment_vars},
                "state": entity_state(record, e.name),
                **_concurrency(e),
                **({"batching": e.batching.to_json()} if e.batching else {}),
            }
        )
    return {
        "served_entities": entities,
        "traffic_config": {
            "routes": [
                {
                    "served_model_name": r.served_entity_name,
                    "served_entity_name": r.served_entity_name,
                    "traffic_percentage": r.traffic_percentage,
                }
                for r in spec.routes
            ]
        },
        "config_version": version,
    }


def _concurrency(e: EntitySpec) -> dict[str, int]:
    if e.max_provisioned_concurrency is None:
        return {}
    return {
        "min_provisioned_concurrency": e.min_provisioned_concurrency or 0,
        "max_provisioned_concurrency": e.max_provisioned_concurrency,
    }


def describe(record: EndpointRecord) -> dict[str, Any]:
    """The endpoint as Databricks' GET /api/2.0/serving-endpoints/{name} returns it."""
    out: dict[str, Any] = {
        "name": record.name,
        "id": record.name,
        "creator": "declare",
        "creation_timestamp": int(record.created_at * 1000),
        "last_updated_timestamp": int(record.updated_at * 1000),
        "state": {
            "ready": "READY" if is_ready(record) else "NOT_READY",
            "config_update": record.config_update,
        },
        "endpoint_type": "CUSTOM_MODEL",
        "tags": [{"key": k, "value": v} for k, v in sorted((record.spec or _empty()).tags.items())],
    }
    if record.message and record.config_update != NOT_UPDATING:
        out["state"]["config_update_message"] = record.message
    if record.spec is not None:
        out["config"] = _config(record.spec, record, record.config_version)
        if record.spec.rate_limits:
            out["rate_limits"] = [limit.to_json() for limit in record.spec.rate_limits]
    if record.pending is not None:
        out["pending_config"] = _config(record.pending, record, record.config_version + 1)
    return out


def _empty() -> EndpointSpec:
    return EndpointSpec(name="", entities=(), routes=())
