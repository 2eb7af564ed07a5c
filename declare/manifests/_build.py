"""Normalization of a checked endpoint manifest into an `EndpointSpec`.

`model_uri` is always set (`models:/<entity_name>/<entity_version>` for the Databricks
fields), versions are strings, percentages integers (see `_traffic`), tags a dict; `rollout`
and the enforced rate limits become typed values of the spec (`RolloutPolicy.from_manifest`,
`manifest_limits`); the sections declare records but does not act on stay raw in
`EndpointSpec.extra` (`EXTRA_FIELDS`, `auto_capture_config`, and per entity
`ENTITY_EXTRA_FIELDS` under `entity_settings`, but for the provisioned concurrency and the
`autoscaling` timings, which are typed); an entity's `batching` becomes a `Batching`.

Does not check anything: it is called only for a document whose checks found no problem
(`_endpoint`), and trusts the shapes those checks and the JSON Schema guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from declare.errors import Location
from declare.model import (
    AutoscalePolicy,
    Batching,
    EndpointSpec,
    EntitySpec,
    RolloutPolicy,
    Route,
    manifest_limits,
)

from ._entities import NamedEntities
from ._names import model_keys, version_text
from ._source import Document, FieldPath, format_path

DEFAULT_PROVIDER = "local"  # an endpoint's provider when neither it nor declare.yaml names one

# Top-level Databricks sections declare records but does not act on: kept raw in
# EndpointSpec.extra. (`rollout` and `rate_limits` are parsed into the spec's own fields.)
EXTRA_FIELDS = (
    "route_optimized",
    "ai_gateway",
    "budget_policy_id",
    "description",
    "email_notifications",
)
# Served-entity fields of Databricks beside the common ones (in the order `fmt` writes them).
ENTITY_EXTRA_FIELDS = (
    "instance_profile_arn",
    "min_provisioned_throughput",
    "max_provisioned_throughput",
    "provisioned_model_units",
    "min_provisioned_concurrency",
    "max_provisioned_concurrency",
    "burst_scaling_enabled",
)
# Those parsed into EntitySpec; the others are kept raw in extra["entity_settings"][name].
TYPED_ENTITY_FIELDS = ("min_provisioned_concurrency", "max_provisioned_concurrency")


def _entity_spec(
    doc: Document, name: str, path: FieldPath, raw: dict[str, Any], legacy: bool
) -> EntitySpec:
    """One served entity, normalized (its model always as a `model_uri`)."""
    name_key, version_key = model_keys(legacy)
    model_name = raw.get(name_key)
    version = version_text(raw.get(version_key))
    uri = raw.get("model_uri") or f"models:/{model_name}/{version}"
    batching = raw.get("batching")
    return EntitySpec(
        name=name,
        model_uri=uri,
        entity_name=model_name,
        entity_version=version,
        workload_size=raw.get("workload_size", "Small"),
        workload_type=raw.get("workload_type", "CPU"),
        scale_to_zero_enabled=bool(raw.get("scale_to_zero_enabled", False)),
        environment_vars=dict(raw.get("environment_vars") or {}),
        replicas=None if raw.get("replicas") is None else int(raw["replicas"]),
        min_provisioned_concurrency=raw.get("min_provisioned_concurrency"),
        max_provisioned_concurrency=raw.get("max_provisioned_concurrency"),
        batching=None if batching is None else Batching.from_json(batching),
        location=Location(doc.file, doc.line(path), format_path(path)),
    )


def _extra(
    value: dict[str, Any], config: dict[str, Any], settings: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The sections kept raw: top-level extras, auto_capture_config, per-entity settings."""
    extra: dict[str, Any] = {f: value[f] for f in EXTRA_FIELDS if f in value}
    if "auto_capture_config" in config:
        extra["auto_capture_config"] = config["auto_capture_config"]
    if settings:
        extra["entity_settings"] = settings
    return extra


def build_spec(
    doc: Document,
    key: str,
    entities: NamedEntities,
    routes: tuple[Route, ...],
    tags: Mapping[str, str],
    default_provider: str,
) -> EndpointSpec:
    """The endpoint of `doc`, whose served entities are `doc.value["config"][key]`."""
    value: dict[str, Any] = doc.value
    config: dict[str, Any] = value["config"]
    legacy = key == "served_models"
    specs: list[EntitySpec] = []
    settings: dict[str, dict[str, Any]] = {}
    for (name, path), raw in zip(entities, config[key], strict=True):
        specs.append(_entity_spec(doc, name, path, raw, legacy))
        kept = {f: raw[f] for f in ENTITY_EXTRA_FIELDS if f in raw and f not in TYPED_ENTITY_FIELDS}
        if kept:
            settings[name] = kept
    limits = manifest_limits(value)
    return EndpointSpec(
        name=value["name"],
        entities=tuple(specs),
        routes=routes,
        provider=value.get("provider", default_provider),
        tags=tags,
        rollout=RolloutPolicy.from_manifest(value.get("rollout")),
        autoscaling=AutoscalePolicy.from_json(value.get("autoscaling")),
        rate_limits=limits.top,
        ai_gateway_rate_limits=limits.ai_gateway,
        extra=_extra(value, config, settings),
        location=Location(doc.file, doc.line(("name",))),
    )
