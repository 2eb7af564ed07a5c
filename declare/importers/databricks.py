"""A Databricks serving endpoint, as `GET /api/2.0/serving-endpoints/{name}` returns it,
turned into a declare manifest.

A declare manifest is a superset of Databricks' create-endpoint body, so importing is
mostly dropping what the GET adds: read-only fields (`id`, `state`, `creator`,
`creation_timestamp`, `last_updated_timestamp`, `permission_level`, `endpoint_url`,
`pending_config`, `config.config_version`, a served entity's `state`, `creator`, ...,
`auto_capture_config.state`) and anything else the manifest schema does not know. The fields
kept are those of schemas/endpoint.schema.json, found by walking the schema itself, so the
import follows the schema as it grows. Every dropped field is reported by its path.

Also accepted: the list response (`{"endpoints": [...]}`), giving one manifest per endpoint.
Refused with a clear error: served entities that are external or foundation models (declare
serves custom MLflow models) and JSON that is not an endpoint.

Pure: JSON values in, manifest values and YAML text out; no network, no files.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from declare.errors import ConfigError, ManifestError
from declare.fmt import canonical_order, format_yaml
from declare.manifests import ENDPOINT_SCHEMA, load_schema, validate_document

# Served-entity kinds declare cannot serve: it runs custom MLflow models only.
_NOT_CUSTOM = ("external_model", "foundation_model")


@dataclass(frozen=True)
class Imported:
    """One endpoint's manifest and the paths of the fields that were dropped."""

    name: str
    manifest: Mapping[str, Any]
    dropped: tuple[str, ...]
    config_version: int | None = None
    pending: bool = False


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = root["$defs"][ref.removeprefix("#/$defs/")]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _resolve(merged, root)
    return schema


def _prune(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str, dropped: list[str]
) -> Any:
    """`value` with only the object keys `schema` allows; dropped paths appended."""
    schema = _resolve(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties")
        if not isinstance(props, dict) or schema.get("additionalProperties", True) is not False:
            return value
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key not in props:
                dropped.append(where)
                continue
            if item is None:  # Databricks writes some absent fields as null
                dropped.append(where)
                continue
            out[key] = _prune(item, props[key], root, where, dropped)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            _prune(item, schema["items"], root, f"{path}[{i}]", dropped)
            for i, item in enumerate(value)
        ]
    return value


def _check_custom(endpoint: Mapping[str, Any], name: str) -> None:
    config = endpoint.get("config") or {}
    for section in ("served_entities", "served_models"):
        for i, entity in enumerate(config.get(section) or []):
            if not isinstance(entity, dict):
                continue
            for kind in _NOT_CUSTOM:
                if entity.get(kind):
                    raise ConfigError(
                        f"endpoint {name!r}: config.{section}[{i}] is an "
                        f"{kind.replace('_', ' ')} ({entity.get('name', '?')}); declare serves "
                        "custom MLflow models only (entity_name + entity_version)"
                    )


def import_endpoint(endpoint: Mapping[str, Any], source: str = "<json>") -> Imported:
    """The manifest of one endpoint of a Databricks GET response; raises a DeclareError."""
    if not isinstance(endpoint, dict) or not isinstance(endpoint.get("name"), str):
        raise ConfigError(
            f"{source}: not a Databricks serving endpoint: expected a JSON object with a "
            '"name" (the response of GET /api/2.0/serving-endpoints/{name})'
        )
    name = endpoint["name"]
    config = endpoint.get("config")
    if not isinstance(config, dict):
        pending = (
            " (it has only a pending_config: wait for its update)"
            if endpoint.get("pending_config")
            else ""
        )
        raise ConfigError(f"{source}: endpoint {name!r} has no config{pending}")
    _check_custom(endpoint, name)
    body = dict(endpoint)
    config = dict(config)
    dropped: list[str] = []
    # The GET may return both forms for one endpoint; the schema takes one of them.
    if config.get("served_entities") and config.get("served_models"):
        config.pop("served_models")
        dropped.append("config.served_models (same as served_entities)")
    routes = (config.get("traffic_config") or {}).get("routes")
    if isinstance(routes, list):
        config["traffic_config"] = {
            **config["traffic_config"],
            "routes": [_one_route_name(r) for r in routes],
        }
    body["config"] = config
    schema = load_schema(ENDPOINT_SCHEMA)
    manifest = _prune(body, schema, schema, "", dropped)
    try:
        validate_document(manifest, source)
    except ManifestError as exc:
        raise ConfigError(
            f"{source}: endpoint {name!r} imports to a manifest declare refuses:\n"
            + "\n".join(f"  {p.location.field}: {p.message}" for p in exc.problems)
        ) from None
    version = config.get("config_version")
    return Imported(
        name=name,
        manifest=canonical_order(manifest),
        dropped=tuple(dropped),
        config_version=version if isinstance(version, int) else None,
        pending=bool(endpoint.get("pending_config")),
    )


def _one_route_name(route: Any) -> Any:
    """A route naming its entity twice (served_model_name and served_entity_name) keeps one."""
    if isinstance(route, dict) and "served_model_name" in route and "served_entity_name" in route:
        return {k: v for k, v in route.items() if k != "served_entity_name"}
    return route


def import_response(data: Any, source: str = "<json>") -> list[Imported]:
    """Every endpoint of a GET response: one endpoint, or the list `{"endpoints": [...]}`."""
    if isinstance(data, dict) and "name" not in data and isinstance(data.get("endpoints"), list):
        return [import_endpoint(e, source) for e in data["endpoints"]]
    return [import_endpoint(data, source)]


def to_yaml(imported: Sequence[Imported]) -> str:
    """The manifests as one YAML file (a document per endpoint), in declare fmt's layout."""
    from ruamel.yaml import YAML

    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    y.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    parts = []
    for item in imported:
        stream = io.StringIO()
        y.dump(dict(item.manifest), stream)
        note = f", config_version {item.config_version}" if item.config_version else ""
        head = f'# Imported from the Databricks serving endpoint "{item.name}"{note}.\n'
        if item.pending:
            head += (
                "# It had an update in progress (pending_config): this is the config it served.\n"
            )
        parts.append(head + stream.getvalue())
    return format_yaml("---\n".join(parts), "<import>")
