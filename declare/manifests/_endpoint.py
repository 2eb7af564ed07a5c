"""Endpoint manifests: the rules a schema cannot state, and normalization to `EndpointSpec`.

`check_endpoint` runs, on one document, the JSON Schema (`_schema`) and then the cross-field
rules, each in its own module, every problem located at its field:
- `_entities`: served_entities or the legacy served_models, not both, at least one entity;
  entity names unique in the endpoint, and short enough with the endpoint's name for the
  replica ids providers derive; environment variable names and secret references;
- `_names`: each entity names its model by entity_name + entity_version or model_uri, never
  both; model URIs well formed; entity names given or derived as Databricks derives them;
- `_traffic`: routes name existing entities, each at most once, summing to 100; the default
  split without traffic_config;
- here: tag keys unique; `rollout` (declare.model's `rollout_problems`); the rate limits the
  gateway enforces from `ai_gateway.rate_limits` (entries with `calls` and key endpoint/user)
  are whole numbers per minute or hour (the JSON Schema checks the top-level `rate_limits`).
Only a document without problems is normalized (`_build`).

Does not read files (see `_source`), compare endpoints across files (`declare.manifests`), or
look anything up in MLflow.
"""

from __future__ import annotations

from typing import Any

from declare.errors import LocatedError
from declare.model import EndpointSpec, manifest_limits, rollout_problems

from ._build import DEFAULT_PROVIDER, build_spec
from ._entities import check_replica_ids, entities_key, named_entities
from ._findings import Findings
from ._schema import ENDPOINT_SCHEMA, schema_problems, show
from ._source import Document
from ._traffic import check_routes


def _tags(raw_tags: Any, found: Findings) -> dict[str, str]:
    """`tags: [{key, value}]` as a dict (a missing or non-string value as ""); keys unique."""
    tags: dict[str, str] = {}
    if not isinstance(raw_tags, list):
        return tags
    for i, tag in enumerate(raw_tags):
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
            continue
        key = tag["key"]
        if key in tags:
            found.report(("tags", i, "key"), f"duplicate tag key {key!r}")
            continue
        value = tag.get("value", "")
        tags[key] = value if isinstance(value, str) else ""
    return tags


def _policy_problems(value: dict[str, Any], found: Findings) -> None:
    """Reports what is wrong with `rollout` and with the enforced `ai_gateway` rate limits."""
    for path, message in rollout_problems(value.get("rollout")):
        found.report(("rollout", *path), message)
    for where, message in manifest_limits(value).problems:
        if where[0] == "ai_gateway":  # the JSON Schema checks the top-level entries
            found.report(where, message)


def _check(doc: Document, found: Findings, default_provider: str) -> EndpointSpec | None:
    """The endpoint of `doc` when every check passes; each problem goes to `found`."""
    value = doc.value
    if not isinstance(value, dict):
        found.report((), f"an endpoint manifest must be a mapping, got {show(value)}")
        return None
    found.extend(schema_problems(doc, ENDPOINT_SCHEMA))
    config = value.get("config")
    if not isinstance(config, dict):
        return None
    key = entities_key(config, found)
    if key is None:
        return None
    entities = named_entities(config, key, found)
    check_replica_ids(value.get("name"), entities, found)
    routes = check_routes(config, entities, found)
    tags = _tags(value.get("tags"), found)
    _policy_problems(value, found)
    if found.problems or entities is None or routes is None:
        return None
    return build_spec(doc, key, entities, routes, tags, default_provider)


def check_endpoint(
    doc: Document, default_provider: str = DEFAULT_PROVIDER
) -> tuple[EndpointSpec | None, list[LocatedError]]:
    """The normalized endpoint of one manifest document, or the problems that prevent it."""
    found = Findings(doc)
    spec = _check(doc, found, default_provider)
    if spec is None and not found.problems:  # every rejection must say why
        found.report((), "cannot be read as an endpoint manifest")
    return spec, found.problems
