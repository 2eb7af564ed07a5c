"""Endpoint manifests: the rules a schema cannot state, and normalization to `EndpointSpec`.

Checked here, after the JSON Schema (each problem located at its field):
- served_entities or the legacy served_models, not both, at least one entity;
- an entity names its model by entity_name + entity_version (Databricks) or model_uri
  (declare), never both; model_uri is `models:/name/version`, `models:/name@alias`,
  `runs:/run_id/path` or a path/other artifact URI;
- entity names: given, or derived as Databricks does (`<entity_name>-<entity_version>`;
  for `models:/n/v` -> `n-v`, for `models:/n@a` -> `n-a`; characters other than letters,
  digits, '-' and '_', such as the dots of a Unity Catalog name, become '-'); a runs:/ URI or
  a path needs an explicit name; names are unique in the endpoint;
- environment variable names are valid, and a value holding `{{` is one whole secret
  reference `{{secrets/<scope>/<key>}}`;
- routes name an existing entity (by served_entity_name or served_model_name), each entity
  at most once, percentages sum to 100;
- the rate limits the gateway enforces (`rate_limits`, and `ai_gateway.rate_limits` entries
  with `calls` and key endpoint/user) are whole numbers per minute or hour.

Traffic without `traffic_config`: one entity gets 100%; several get an even split, the
remainder going to the first entity (e.g. 34/33/33). Databricks documents no default for
several entities: its API reference asks for a route per served entity and every
multi-entity example spells traffic_config out, so a manifest meant to run on Databricks
too should write it. With `traffic_config`, an entity without a route is served but gets
no traffic: it is normalized to a route of 0% (Databricks wants that route written).

Normalization: `model_uri` is always set (`models:/<entity_name>/<entity_version>` for the
Databricks fields), versions are strings, percentages integers, tags a dict; `rollout` and
the enforced rate limits become typed values of the spec; the sections declare records but
does not act on stay raw in `EndpointSpec.extra`.

Does not read files (see `_source`) and does not look anything up in MLflow.
"""

from __future__ import annotations

import re
from typing import Any

from declare.errors import LocatedError, Location
from declare.model import (
    EndpointSpec,
    EntitySpec,
    RolloutPolicy,
    Route,
    manifest_limits,
    rollout_problems,
)

from ._schema import ENDPOINT_SCHEMA, did_you_mean, schema_problems, show
from ._source import Document, FieldPath, format_path

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_RE = re.compile(r"^\{\{secrets/[A-Za-z0-9_.@-]+/[A-Za-z0-9_.-]+\}\}$")
PERCENT_RE = re.compile(r"^(100|[1-9]?[0-9])$")

# Top-level Databricks sections declare records but does not act on: kept raw in
# EndpointSpec.extra. (`rollout` and `rate_limits` are parsed into the spec's own fields.)
EXTRA_FIELDS = (
    "route_optimized",
    "ai_gateway",
    "budget_policy_id",
    "description",
    "email_notifications",
)
# Served-entity fields accepted and kept raw in extra["entity_settings"][<entity name>].
ENTITY_EXTRA_FIELDS = (
    "instance_profile_arn",
    "min_provisioned_throughput",
    "max_provisioned_throughput",
    "provisioned_model_units",
    "min_provisioned_concurrency",
    "max_provisioned_concurrency",
    "burst_scaling_enabled",
)

_URI_FORMS = "models:/<name>/<version>, models:/<name>@<alias>, runs:/<run_id>/<path> or a path"


def default_name_for_uri(uri: str) -> str | None:
    """The served entity name a model URI implies (`models:/n/v` -> `n-v`), if any."""
    if not uri.startswith("models:/"):
        return None
    rest = uri[len("models:/") :]
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        return _sanitize(f"{name}-{alias}")
    name, _, version = rest.rpartition("/")
    return _sanitize(f"{name}-{version}")


def model_uri_problem(uri: str) -> str | None:
    """Why `uri` is not a model URI declare can resolve, or None when it is well formed."""
    if not uri.strip():
        return f"must be a model URI: {_URI_FORMS}"
    if uri.startswith("models:"):
        rest = uri[len("models:/") :] if uri.startswith("models:/") else ""
        if "@" in rest:
            name, alias = rest.rsplit("@", 1)
            ok = bool(name) and bool(alias) and "/" not in alias and "/" not in name
        else:
            name, _, version = rest.rpartition("/")
            ok = bool(name) and bool(version)
        if not ok:
            return f"must be models:/<name>/<version> or models:/<name>@<alias>, got {show(uri)}"
        return None
    if uri.startswith("runs:"):
        rest = uri[len("runs:/") :] if uri.startswith("runs:/") else ""
        run_id, _, artifact = rest.partition("/")
        if not run_id or not artifact.strip("/"):
            return f"must be runs:/<run_id>/<artifact path>, got {show(uri)}"
    return None


def _sanitize(raw: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


def _version_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else None
    if isinstance(value, str) and value.strip():
        return value
    return None


def _percentage(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value if 0 <= value <= 100 else None
    if isinstance(value, str) and PERCENT_RE.match(value):
        return int(value)
    return None


def even_split(names: list[str]) -> tuple[Route, ...]:
    """100% over `names`, evenly; the remainder goes to the first (34/33/33)."""
    if not names:
        return ()
    share, remainder = divmod(100, len(names))
    return tuple(Route(name, share + (remainder if i == 0 else 0)) for i, name in enumerate(names))


class _EndpointCheck:
    """Checks one endpoint document; collects problems; builds the spec when there are none."""

    def __init__(self, doc: Document, default_provider: str) -> None:
        self.doc = doc
        self.default_provider = default_provider
        self.problems: list[LocatedError] = []

    def report(self, path: FieldPath, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def run(self) -> EndpointSpec | None:
        value = self.doc.value
        if not isinstance(value, dict):
            self.report((), f"an endpoint manifest must be a mapping, got {show(value)}")
            return None
        self.problems.extend(schema_problems(self.doc, ENDPOINT_SCHEMA))
        config = value.get("config")
        if not isinstance(config, dict):
            return None
        key = self._entities_key(config)
        if key is None:
            return None
        entities = self._entities(config, key)
        routes = self._routes(config, entities)
        tags = self._tags(value.get("tags"))
        for path, message in rollout_problems(value.get("rollout")):
            self.report(("rollout", *path), message)
        for where, message in manifest_limits(value).problems:
            if where[0] == "ai_gateway":  # the JSON Schema checks the top-level entries
                self.report(where, message)
        if self.problems or entities is None or routes is None:
            return None
        return self._build(value, config, key, entities, routes, tags)

    def _entities_key(self, config: dict[str, Any]) -> str | None:
        has_new, has_old = "served_entities" in config, "served_models" in config
        if has_new and has_old:
            self.report(
                ("config", "served_models"),
                "use served_entities or the legacy served_models, not both",
            )
            return None
        if not has_new and not has_old:
            self.report(("config", "served_entities"), "is required (at least one served entity)")
            return None
        return "served_entities" if has_new else "served_models"

    def _entity_name(self, raw: dict[str, Any], path: FieldPath, legacy: bool) -> str | None:
        """The entity's model URI is checked here too; returns its (given or derived) name."""
        name_key, version_key = (
            ("model_name", "model_version")
            if legacy
            else (
                "entity_name",
                "entity_version",
            )
        )
        model_name, version = raw.get(name_key), _version_text(raw.get(version_key))
        derived: str | None = None
        uri = raw.get("model_uri")
        uri_usable = False  # a well-formed model_uri, alone
        if "model_uri" in raw:
            if name_key in raw or version_key in raw:
                self.report(
                    (*path, "model_uri"),
                    f"use either model_uri or {name_key} + {version_key}, not both",
                )
            elif isinstance(uri, str):
                problem = model_uri_problem(uri)
                if problem:
                    self.report((*path, "model_uri"), problem)
                else:
                    uri_usable = True
                    derived = default_name_for_uri(uri)
        elif not legacy:
            if name_key not in raw:
                self.report((*path, name_key), "is required (or model_uri)")
            elif version_key not in raw:
                self.report((*path, version_key), f"is required with {name_key}")
        if isinstance(model_name, str) and model_name and version is not None:
            derived = _sanitize(f"{model_name}-{version}")
        given = raw.get("name")
        if "name" in raw:
            return given if isinstance(given, str) else None
        if derived is None:
            if uri_usable:
                self.report(
                    (*path, "name"),
                    "is required when model_uri is a runs:/ URI or a path "
                    "(no name can be derived from it)",
                )
            return None
        if not NAME_RE.match(derived):
            self.report(
                (*path, "name"),
                f"is required: the derived name {show(derived)} is longer than 128 characters",
            )
            return None
        return derived

    def _entities(self, config: dict[str, Any], key: str) -> list[tuple[str, FieldPath]] | None:
        raw_entities = config.get(key)
        if not isinstance(raw_entities, list):
            return None
        result: list[tuple[str, FieldPath]] = []
        seen: dict[str, FieldPath] = {}
        complete = True
        for i, raw in enumerate(raw_entities):
            path: FieldPath = ("config", key, i)
            if not isinstance(raw, dict):
                complete = False
                continue
            self._environment(raw.get("environment_vars"), (*path, "environment_vars"))
            name = self._entity_name(raw, path, legacy=key == "served_models")
            if name is None:
                complete = False
                continue
            if name in seen:
                self.report(
                    (*path, "name"),
                    f"served entity name {name!r} is already used by {format_path(seen[name])}",
                )
                continue
            seen[name] = path
            result.append((name, path))
        return result if complete else None

    def _environment(self, env: Any, path: FieldPath) -> None:
        if not isinstance(env, dict):
            return
        for var, val in env.items():
            if not ENV_NAME_RE.match(var):
                self.report(
                    (*path, var),
                    "is not a valid environment variable name (letters, digits and '_', "
                    "not starting with a digit)",
                )
            if isinstance(val, str) and "{{" in val and not SECRET_RE.match(val):
                self.report(
                    (*path, var),
                    "a secret reference must be the whole value, as {{secrets/<scope>/<key>}}, "
                    f"got {show(val)}",
                )

    def _routes(
        self, config: dict[str, Any], entities: list[tuple[str, FieldPath]] | None
    ) -> tuple[Route, ...] | None:
        names = [name for name, _ in entities] if entities is not None else None
        traffic = config.get("traffic_config")
        if traffic is None:
            return even_split(names) if names is not None else None
        if not isinstance(traffic, dict) or not isinstance(traffic.get("routes"), list):
            return None
        routes: list[Route] = []
        routed: dict[str, int] = {}
        complete = True
        for j, raw in enumerate(traffic["routes"]):
            path: FieldPath = ("config", "traffic_config", "routes", j)
            if not isinstance(raw, dict):
                complete = False
                continue
            target = self._route_target(raw, path, names)
            percentage = _percentage(raw.get("traffic_percentage"))
            if target is None or percentage is None:
                complete = False
                continue
            if target in routed:
                self.report(
                    path,
                    f"served entity {target!r} is routed twice (also by routes[{routed[target]}]); "
                    "give each entity one route",
                )
                complete = False
                continue
            routed[target] = j
            routes.append(Route(target, percentage))
        if not complete or names is None:
            return None
        total = sum(r.traffic_percentage for r in routes)
        if total != 100:
            terms = " + ".join(str(r.traffic_percentage) for r in routes)
            self.report(
                ("config", "traffic_config", "routes"),
                f"traffic percentages must sum to 100, got {total} ({terms})",
            )
            return None
        unrouted = [Route(name, 0) for name in names if name not in routed]
        return (*routes, *unrouted)

    def _route_target(
        self, raw: dict[str, Any], path: FieldPath, names: list[str] | None
    ) -> str | None:
        by_entity, by_model = raw.get("served_entity_name"), raw.get("served_model_name")
        if by_entity is not None and by_model is not None and by_entity != by_model:
            self.report(
                (*path, "served_model_name"),
                f"names {show(by_model)} but served_entity_name names {show(by_entity)}; "
                "give one of them",
            )
            return None
        key = "served_entity_name" if by_entity is not None else "served_model_name"
        target = raw.get(key)
        if target is None:
            self.report((*path, "served_entity_name"), "is required (or served_model_name)")
            return None
        if not isinstance(target, str):
            return None
        if names is not None and target not in names:
            hint = did_you_mean(target, names)
            self.report(
                (*path, key),
                f"no served entity named {target!r}; served entities: {', '.join(names)}{hint}",
            )
            return None
        return target

    def _tags(self, raw_tags: Any) -> dict[str, str]:
        tags: dict[str, str] = {}
        if not isinstance(raw_tags, list):
            return tags
        for i, tag in enumerate(raw_tags):
            if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
                continue
            key = tag["key"]
            if key in tags:
                self.report(("tags", i, "key"), f"duplicate tag key {key!r}")
                continue
            value = tag.get("value", "")
            tags[key] = value if isinstance(value, str) else ""
        return tags

    def _build(
        self,
        value: dict[str, Any],
        config: dict[str, Any],
        key: str,
        entities: list[tuple[str, FieldPath]],
        routes: tuple[Route, ...],
        tags: dict[str, str],
    ) -> EndpointSpec:
        legacy = key == "served_models"
        specs: list[EntitySpec] = []
        settings: dict[str, dict[str, Any]] = {}
        for (name, path), raw in zip(entities, config[key], strict=True):
            model_name = raw.get("model_name" if legacy else "entity_name")
            version = _version_text(raw.get("model_version" if legacy else "entity_version"))
            uri = raw.get("model_uri") or f"models:/{model_name}/{version}"
            specs.append(
                EntitySpec(
                    name=name,
                    model_uri=uri,
                    entity_name=model_name,
                    entity_version=version,
                    workload_size=raw.get("workload_size", "Small"),
                    workload_type=raw.get("workload_type", "CPU"),
                    scale_to_zero_enabled=bool(raw.get("scale_to_zero_enabled", False)),
                    environment_vars=dict(raw.get("environment_vars") or {}),
                    replicas=None if raw.get("replicas") is None else int(raw["replicas"]),
                    location=Location(self.doc.file, self.doc.line(path), format_path(path)),
                )
            )
            kept = {f: raw[f] for f in ENTITY_EXTRA_FIELDS if f in raw}
            if kept:
                settings[name] = kept
        extra: dict[str, Any] = {f: value[f] for f in EXTRA_FIELDS if f in value}
        if "auto_capture_config" in config:
            extra["auto_capture_config"] = config["auto_capture_config"]
        if settings:
            extra["entity_settings"] = settings
        limits = manifest_limits(value)
        return EndpointSpec(
            name=value["name"],
            entities=tuple(specs),
            routes=routes,
            provider=value.get("provider", self.default_provider),
            tags=tags,
            rollout=RolloutPolicy.from_manifest(value.get("rollout")),
            rate_limits=limits.top,
            ai_gateway_rate_limits=limits.ai_gateway,
            extra=extra,
            location=Location(self.doc.file, self.doc.line(("name",))),
        )


def check_endpoint(
    doc: Document, default_provider: str = "local"
) -> tuple[EndpointSpec | None, list[LocatedError]]:
    """The normalized endpoint of one manifest document, or the problems that prevent it."""
    check = _EndpointCheck(doc, default_provider)
    spec = check.run()
    if spec is None and not check.problems:  # every rejection must say why
        check.report((), "cannot be read as an endpoint manifest")
    return spec, check.problems
