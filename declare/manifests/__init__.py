"""Manifests: the endpoints a project asks for, loaded, validated and normalized.

A project folder holds manifests: every top-level file matching the `include` globs (default
`*.yaml`, `*.yml`, `*.json`), except declare.yaml itself, hidden files and files matching the
`exclude` globs. A YAML file may hold several documents (`---`). The caller passes the globs
and the default provider as plain values (declare.config reads them from declare.yaml's
`manifests` and `default_provider`): this package knows nothing of project settings.

An Endpoint manifest is a superset of the body of Databricks' `POST /api/2.0/serving-endpoints`
for custom models (see schemas/endpoint.schema.json): such a body, unchanged, is a valid
manifest with the same meaning. Loading checks the JSON Schema, then the cross-field rules
(`_endpoint`), then that endpoint names are unique across files. Every problem of every file
is collected and raised as one `ManifestError`, each problem naming the file, the 1-based line
and the field path, sorted by file and line.

Modules: `_source` (files -> plain values with lines), `_schema` (JSON Schema), `_endpoint`
(one document's checks, with `_entities`, `_names`, `_traffic`, collected in `_findings`),
`_build` (normalization to `EndpointSpec`); this module finds the files and puts it together.

Does not read declare.yaml's settings (declare.config does, with this package's reader and
schema), resolve models (aliases, runs) in MLflow, check that a provider is installed, or
read state: later stages do.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from declare.errors import ConfigError, LocatedError, Location, ManifestError
from declare.model import EndpointSpec

from ._build import DEFAULT_PROVIDER, ENTITY_EXTRA_FIELDS
from ._endpoint import check_endpoint
from ._names import default_name_for_uri, model_uri_problem
from ._schema import ENDPOINT_SCHEMA, PROJECT_SCHEMA, load_schema, schema_problems
from ._source import Document, FieldPath, format_path, read_json, read_yaml
from ._traffic import even_split

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_INCLUDE",
    "DEFAULT_PROVIDER",
    "ENDPOINT_SCHEMA",
    "ENTITY_EXTRA_FIELDS",
    "PROJECT_SCHEMA",
    "Document",
    "FieldPath",
    "check_endpoint",
    "default_name_for_uri",
    "discover_manifest_files",
    "even_split",
    "format_path",
    "load_manifest_file",
    "load_project_manifests",
    "load_schema",
    "model_uri_problem",
    "read_documents",
    "schema_problems",
    "sort_problems",
    "validate_document",
]

CONFIG_FILE = "declare.yaml"
DEFAULT_INCLUDE: tuple[str, ...] = ("*.yaml", "*.yml", "*.json")


def sort_problems(problems: Sequence[LocatedError]) -> list[LocatedError]:
    """Problems sorted by file, line and field, each reported once."""
    unique = {str(p): p for p in problems}
    return sorted(
        unique.values(),
        key=lambda p: (p.location.file, p.location.line, p.location.field, p.message),
    )


def discover_manifest_files(
    project_dir: Path,
    include: Sequence[str] = DEFAULT_INCLUDE,
    exclude: Sequence[str] = (),
) -> list[Path]:
    """The manifest files at the top level of `project_dir`, sorted by name."""
    if not project_dir.is_dir():
        raise ConfigError(f"project folder {project_dir} does not exist or is not a folder")
    found = []
    for path in sorted(project_dir.iterdir(), key=lambda p: p.name):
        name = path.name
        if name.startswith(".") or name in (CONFIG_FILE, "declare.yml") or not path.is_file():
            continue
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
            continue
        found.append(path)
    return found


def read_documents(path: Path, display: str) -> tuple[list[Document], list[LocatedError]]:
    """The documents of one file (JSON by its `.json` suffix, else YAML) and read problems."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return [], [LocatedError(Location(display, 1, "(file)"), f"cannot read file: {reason}")]
    if path.suffix.lower() == ".json":
        return read_json(data, display)
    return read_yaml(data, display)


def load_manifest_file(
    path: Path, display: str | None = None, default_provider: str = DEFAULT_PROVIDER
) -> tuple[list[EndpointSpec], list[LocatedError]]:
    """The endpoints of one manifest file and the problems found in it (not raised)."""
    shown = display or path.name
    documents, problems = read_documents(path, shown)
    specs: list[EndpointSpec] = []
    for document in documents:
        spec, found = check_endpoint(document, default_provider)
        problems.extend(_not_read_problems(found, document.read_problems))
        if spec is not None and not document.read_problems:
            specs.append(spec)
    return specs, problems


def _not_read_problems(
    found: Sequence[LocatedError], read: Sequence[LocatedError]
) -> list[LocatedError]:
    """Drop checks of values that could not be read (already reported, e.g. "got null")."""
    unreadable = {p.location.field for p in read}

    def covered(field: str) -> bool:
        return any(field == bad or field.startswith((bad + ".", bad + "[")) for bad in unreadable)

    return [p for p in found if not covered(p.location.field)]


def _duplicate_names(specs: Sequence[EndpointSpec]) -> list[LocatedError]:
    problems = []
    first: dict[str, EndpointSpec] = {}
    for spec in specs:
        if spec.name not in first:
            first[spec.name] = spec
            continue
        where = first[spec.name].location
        there = f"{where.file}:{where.line}" if where else "another manifest"
        location = spec.location or Location("?", 0)
        problems.append(
            LocatedError(
                Location(location.file, location.line, "name"),
                f"endpoint {spec.name!r} is already defined at {there}; endpoint names must be "
                "unique in the project",
            )
        )
    return problems


def load_project_manifests(
    project_dir: Path,
    *,
    include: Sequence[str] = DEFAULT_INCLUDE,
    exclude: Sequence[str] = (),
    default_provider: str = DEFAULT_PROVIDER,
) -> tuple[EndpointSpec, ...]:
    """Every endpoint the project's manifests ask for, normalized, in file then document order.

    `include` and `exclude` are the file-name globs of `discover_manifest_files`;
    `default_provider` is the provider of an endpoint that names none.
    Raises ManifestError listing every problem of every file (sorted by file and line).
    """
    files = discover_manifest_files(project_dir, tuple(include), tuple(exclude))
    specs: list[EndpointSpec] = []
    problems: list[LocatedError] = []
    for path in files:
        found, file_problems = load_manifest_file(path, path.name, default_provider)
        specs.extend(found)
        problems.extend(file_problems)
    problems.extend(_duplicate_names(specs))
    if problems:
        raise ManifestError(sort_problems(problems))
    return tuple(specs)


def validate_document(
    data: Mapping[str, Any] | Any,
    filename: str = "<manifest>",
    default_provider: str = DEFAULT_PROVIDER,
) -> EndpointSpec:
    """Validate one already-parsed manifest (e.g. a Databricks request body) without lines.

    Problems carry the field path and line 0 (unknown); raises ManifestError.
    """
    document = Document(filename, 0, data, {}, 0)
    spec, problems = check_endpoint(document, default_provider)
    if spec is None:
        raise ManifestError(sort_problems(problems))
    return spec
