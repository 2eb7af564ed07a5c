"""The served entities of an endpoint manifest: which list, each entity's name and environment.

Checked here (each problem located at its field):
- `config.served_entities` or the legacy `config.served_models`, not both, and one of them;
- every entity has a name (given or derived, see `_names`), unique in the endpoint;
- environment variable names are valid, and a value holding `{{` is one whole secret
  reference `{{secrets/<scope>/<key>}}`;
- explicit provisioned concurrency follows Databricks' rules (`declare.model.scaling`);
- a `batching` delay is a number (NaN passes the schema's bounds: `declare.model.batching`);
- with the endpoint's name, each entity's name makes replica ids no provider refuses
  (`declare.model.names`: at most REPLICA_ID_MAX characters; every file and container name
  a provider derives from them then fits).

Does not check the fields the JSON Schema covers (types, enums, unknown fields: `_schema`),
the routes (`_traffic`), or whether a secret can be resolved (plan does: declare.secrets).
"""

from __future__ import annotations

import re
from typing import Any

from declare.model.batching import batching_problems
from declare.model.names import ENDPOINT_NAME_MAX, replica_id_problem
from declare.model.scaling import concurrency_problems

from ._findings import Findings
from ._names import entity_name
from ._schema import show
from ._source import FieldPath, format_path

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_RE = re.compile(r"^\{\{secrets/[A-Za-z0-9_.@-]+/[A-Za-z0-9_.-]+\}\}$")

NamedEntities = list[tuple[str, FieldPath]]  # each entity's name and the path of its mapping


def entities_key(config: dict[str, Any], found: Findings) -> str | None:
    """`served_entities`, or the legacy `served_models`; None when not exactly one is given."""
    has_new, has_old = "served_entities" in config, "served_models" in config
    if has_new and has_old:
        found.report(
            ("config", "served_models"),
            "use served_entities or the legacy served_models, not both",
        )
        return None
    if not has_new and not has_old:
        found.report(("config", "served_entities"), "is required (at least one served entity)")
        return None
    return "served_entities" if has_new else "served_models"


def named_entities(config: dict[str, Any], key: str, found: Findings) -> NamedEntities | None:
    """The entities of `config[key]` by name, in order; None when one of them has no name."""
    raw_entities = config.get(key)
    if not isinstance(raw_entities, list):
        return None
    result: NamedEntities = []
    seen: dict[str, FieldPath] = {}
    complete = True
    for i, raw in enumerate(raw_entities):
        path: FieldPath = ("config", key, i)
        if not isinstance(raw, dict):
            complete = False
            continue
        check_environment(raw.get("environment_vars"), (*path, "environment_vars"), found)
        for field, message in concurrency_problems(raw):
            found.report((*path, field), message)
        for field, message in batching_problems(raw.get("batching")):
            found.report((*path, "batching", field), message)
        name = entity_name(raw, path, legacy=key == "served_models", found=found)
        if name is None:
            complete = False
            continue
        if name in seen:
            found.report(
                (*path, "name"),
                f"served entity name {name!r} is already used by {format_path(seen[name])}",
            )
            continue
        seen[name] = path
        result.append((name, path))
    return result if complete else None


def check_replica_ids(endpoint: Any, entities: NamedEntities | None, found: Findings) -> None:
    """Reports each entity whose replica ids, named after `endpoint` and the entity, would be
    longer than the providers' names allow. A missing or bad endpoint name is the schema's
    to report, an entity without a name `named_entities`'."""
    if not isinstance(endpoint, str) or not 1 <= len(endpoint) <= ENDPOINT_NAME_MAX:
        return
    for name, path in entities or []:
        problem = replica_id_problem(endpoint, name)
        if problem:
            found.report((*path, "name"), problem)


def check_environment(env: Any, path: FieldPath, found: Findings) -> None:
    """Reports invalid variable names and malformed secret references of `environment_vars`."""
    if not isinstance(env, dict):
        return
    for var, val in env.items():
        if not ENV_NAME_RE.match(var):
            found.report(
                (*path, var),
                "is not a valid environment variable name (letters, digits and '_', "
                "not starting with a digit)",
            )
        if isinstance(val, str) and "{{" in val and not SECRET_RE.match(val):
            found.report(
                (*path, var),
                "a secret reference must be the whole value, as {{secrets/<scope>/<key>}}, "
                f"got {show(val)}",
            )
