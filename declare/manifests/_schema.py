"""JSON Schema validation of manifest documents, with friendly, located messages.

The schemas live in the repository's `schemas/` folder (a wheel install puts them in
`declare/_schemas/`). Each jsonschema error becomes one `LocatedError` naming the file, the
line and the field path, and saying what is allowed there:

    enum                  must be one of Small, Medium, Large, got "Tiny" (did you mean ...?)
    required              is required
    additionalProperties  unknown field 'x'; allowed: a, b, c (did you mean ...?)
    type                  must be a string, got 3

A schema may word its own message with the keyword `x-declare-message` (validators ignore
unknown keywords), e.g. traffic_percentage: "must be an integer from 0 to 100".

Does not check what a schema cannot say (cross-field rules): see `_endpoint`.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from declare.errors import ConfigError, LocatedError

from ._source import Document, FieldPath

ENDPOINT_SCHEMA = "endpoint.schema.json"
PROJECT_SCHEMA = "project.schema.json"

# Fields a Databricks body may hold that declare knows but cannot serve.
UNSUPPORTED_FIELDS: Mapping[str, str] = {
    "external_model": "external models are not served by declare; it serves custom MLflow "
    "models (entity_name + entity_version, or model_uri)",
    "foundation_model": "foundation models are not served by declare; it serves custom MLflow "
    "models (entity_name + entity_version, or model_uri)",
}

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def schema_dirs() -> tuple[Path, ...]:
    """Where schemas are looked for: the repository's `schemas/`, then `declare/_schemas/`."""
    package = Path(__file__).resolve().parent.parent
    return (package.parent / "schemas", package / "_schemas")


@functools.cache
def load_schema(name: str) -> Mapping[str, Any]:
    """The parsed JSON Schema `name` (e.g. "endpoint.schema.json")."""
    for folder in schema_dirs():
        path = folder / name
        if path.is_file():
            loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return loaded
    searched = ", ".join(str(d) for d in schema_dirs())
    raise ConfigError(f"JSON schema {name} not found (looked in {searched}); reinstall declare")


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name))


def show(value: Any) -> str:
    """A value as a message quotes it: JSON-like and short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "a very large number"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a choice is close to `word`, else ``."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return f" (did you mean {lowered[word.lower()]!r}?)"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _custom(error: ValidationError) -> str | None:
    schema = error.schema
    if isinstance(schema, Mapping):
        message = schema.get("x-declare-message")
        if isinstance(message, str):
            return message
    return None


def _allowed_types(expected: Any) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    return " or ".join(_TYPE_NAMES.get(n, n) for n in names)


def _translate(error: ValidationError) -> list[tuple[FieldPath, str]]:
    path: FieldPath = tuple(error.absolute_path)
    keyword = error.validator
    value = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    custom = _custom(error)
    if keyword == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        out = []
        for key in value:
            if key in allowed:
                continue
            if key in UNSUPPORTED_FIELDS:
                out.append(((*path, key), UNSUPPORTED_FIELDS[key]))
                continue
            hint = did_you_mean(key, allowed)
            out.append(
                ((*path, key), f"unknown field {key!r}; allowed: {', '.join(allowed)}{hint}")
            )
        return out
    if keyword == "required" and isinstance(value, dict):
        return [((*path, key), "is required") for key in error.validator_value if key not in value]
    if keyword in ("enum", "const"):
        options = error.validator_value if keyword == "enum" else [error.validator_value]
        listed = ", ".join(str(o) for o in options)
        hint = did_you_mean(value, [str(o) for o in options]) if isinstance(value, str) else ""
        word = "must be one of" if len(options) > 1 else "must be"
        return [(path, f"{word} {listed}, got {show(value)}{hint}")]
    if keyword == "propertyNames":
        message = custom or "is not an allowed name"
        return [((*path, str(value)), message)]
    if custom:
        return [(path, f"{custom}, got {show(value)}")]
    if keyword == "type":
        return [(path, f"must be {_allowed_types(error.validator_value)}, got {show(value)}")]
    limit = error.validator_value
    generic = {
        "minimum": f"must be at least {limit}",
        "maximum": f"must be at most {limit}",
        "exclusiveMinimum": f"must be more than {limit}",
        "exclusiveMaximum": f"must be less than {limit}",
        "minLength": f"must have at least {limit} character{'s' if limit != 1 else ''}",
        "maxLength": f"must have at most {limit} characters",
        "pattern": f"must match {limit}",
    }
    if keyword in generic:
        return [(path, f"{generic[keyword]}, got {show(value)}")]
    if keyword == "minItems":
        return [(path, f"must have at least {limit} item{'s' if limit != 1 else ''}")]
    if keyword == "maxItems":
        return [(path, f"must have at most {limit} items")]
    return [(path, str(error.message))]


def schema_problems(document: Document, schema: str) -> list[LocatedError]:
    """Every way `document.value` breaks the schema `schema`, located."""
    problems = []
    for error in _validator(schema).iter_errors(document.value):
        for path, message in _translate(error):
            problems.append(document.problem(path, message))
    return problems
