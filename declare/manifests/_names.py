"""Served entity names and the model each entity names.

An entity names its model by `entity_name` + `entity_version` (Databricks; `model_name` +
`model_version` in the legacy `served_models`) or by `model_uri` (declare), never both.
`model_uri` is `models:/name/version`, `models:/name@alias`, `runs:/run_id/path` or a path
(or another artifact URI).

An entity's name is given, or derived as Databricks derives it: `<entity_name>-<entity_version>`;
for `models:/n/v` -> `n-v`, for `models:/n@a` -> `n-a`; characters other than letters, digits,
'-' and '_' (such as the dots of a Unity Catalog name) become '-'. A runs:/ URI or a path needs
an explicit name.

Does not check that names are unique in the endpoint (see `_entities`), and does not look a
model up in MLflow (declare.resolve does).
"""

from __future__ import annotations

import re
from typing import Any

from declare.model.names import ENTITY_NAME_MAX

from ._findings import Findings
from ._schema import show
from ._source import FieldPath

NAME_RE = re.compile(rf"^[A-Za-z0-9_-]{{1,{ENTITY_NAME_MAX}}}$")

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
    """Characters an entity name cannot hold become '-'."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


def version_text(value: Any) -> str | None:
    """A model version as text (`1`, `1.0` and `"1"` -> `"1"`), or None when it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else None
    if isinstance(value, str) and value.strip():
        return value
    return None


def model_keys(legacy: bool) -> tuple[str, str]:
    """The fields naming an entity's registered model and its version."""
    return ("model_name", "model_version") if legacy else ("entity_name", "entity_version")


def _usable_model_uri(
    raw: dict[str, Any], path: FieldPath, legacy: bool, found: Findings
) -> str | None:
    """Checks how the entity names its model; returns `model_uri` when it is well formed and
    alone (not beside the registered-model fields)."""
    name_key, version_key = model_keys(legacy)
    uri = raw.get("model_uri")
    if "model_uri" in raw:
        if name_key in raw or version_key in raw:
            found.report(
                (*path, "model_uri"),
                f"use either model_uri or {name_key} + {version_key}, not both",
            )
        elif isinstance(uri, str):
            problem = model_uri_problem(uri)
            if problem:
                found.report((*path, "model_uri"), problem)
            else:
                return uri
    elif not legacy:
        if name_key not in raw:
            found.report((*path, name_key), "is required (or model_uri)")
        elif version_key not in raw:
            found.report((*path, version_key), f"is required with {name_key}")
    return None


def entity_name(raw: dict[str, Any], path: FieldPath, legacy: bool, found: Findings) -> str | None:
    """The entity's name, given or derived; None when it has none (problems reported).

    The entity's model reference is checked here too, whether or not a name is given.
    """
    name_key, version_key = model_keys(legacy)
    uri = _usable_model_uri(raw, path, legacy, found)
    derived = default_name_for_uri(uri) if uri is not None else None
    model_name, version = raw.get(name_key), version_text(raw.get(version_key))
    if isinstance(model_name, str) and model_name and version is not None:
        derived = _sanitize(f"{model_name}-{version}")
    if "name" in raw:
        given = raw["name"]
        return given if isinstance(given, str) else None
    if derived is None:
        if uri is not None:
            found.report(
                (*path, "name"),
                "is required when model_uri is a runs:/ URI or a path "
                "(no name can be derived from it)",
            )
        return None
    if not NAME_RE.match(derived):
        found.report(
            (*path, "name"),
            f"is required: the derived name {show(derived)} is longer than {ENTITY_NAME_MAX} "
            "characters",
        )
        return None
    return derived
