"""A stored state document checked, field by field, before `declare.state.document` reads it.

`load_state(doc, where)` validates `doc` against schemas/state.schema.json (every field the
`from_json` methods of the state's values read: its type, the values it may take, whether it
is required) and then builds the `State`. A document that breaks the schema raises
`StateDocumentError` listing every problem at `where` (the state file, or the database table
and workspace) and the field's JSON path, with what was expected and what was found:

    state/declare.tfstate.json: endpoints.iris.replicas[0].index: expected an integer, found "x"
    state/declare.tfstate.json: endpoints.iris.replicas[0].handle.url: expected a string, found
        no such field

Every backend's read goes through it (`Project.read_state`), and so does `state push` for the
file it is given. Does not read or write storage, and never repairs a document: what is
stored stays as it is. The header (format_version, serial, lineage) is the storage layer's to
check first (`declare.state.backend.check_state`).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from declare.errors import LocatedError, Location, StateDocumentError
from declare.manifests import load_schema
from declare.state.document import State

STATE_SCHEMA = "state.schema.json"
MAX_SHOWN = 20  # problems listed in one error; the rest are counted
RECOVERY = (
    "Nothing was changed. Correct the field in the stored state, or put back a good earlier "
    "state (`declare state push --force FILE`; a local state keeps the copy before its last "
    "write as declare.tfstate.json.backup)."
)

_TYPE_WORDS = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema(STATE_SCHEMA))


def load_state(doc: Mapping[str, Any] | None, where: str, recovery: str = RECOVERY) -> State:
    """The state `doc` holds (None: no state yet); StateDocumentError when a field is wrong."""
    if doc is None:
        return State()
    check_document(doc, where, recovery)
    try:
        return State.from_json(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # beyond the schema
        problem = LocatedError(Location(where), f"cannot be read as a declare state ({exc!r})")
        raise StateDocumentError(where, [problem], recovery) from None


def check_document(doc: Any, where: str, recovery: str = RECOVERY) -> None:
    """StateDocumentError, every problem located, when `doc` breaks the state schema."""
    found = sorted(
        {
            (path, message)
            for error in _validator().iter_errors(doc)
            for path, message in _read(error)
        }
    )
    if not found:
        return
    problems = [LocatedError(Location(where, 0, path), message) for path, message in found]
    if len(problems) > MAX_SHOWN:
        more = len(problems) - MAX_SHOWN
        problems = [
            *problems[:MAX_SHOWN],
            LocatedError(Location(where), f"and {more} more problem{'s' if more != 1 else ''}"),
        ]
    raise StateDocumentError(where, problems, recovery)


def json_path(parts: Iterable[str | int]) -> str:
    """`["endpoints", "iris", "replicas", 0, "index"]` -> `endpoints.iris.replicas[0].index`;
    a key that is not a plain name is quoted: `endpoints["a.b"]`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(the document)"


def _read(error: ValidationError) -> list[tuple[str, str]]:
    """One jsonschema error as (JSON path, 'expected ..., found ...') pairs."""
    path = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    keyword, limit, value = error.validator, error.validator_value, error.instance
    if keyword == "required" and isinstance(value, Mapping):
        properties = schema.get("properties", {})
        return [
            (
                json_path([*path, key]),
                f"expected {_expected(properties.get(key))}, found no such field",
            )
            for key in limit
            if key not in value
        ]
    if keyword == "type":
        return [(json_path(path), f"expected {_types(limit)}, found {_found(value)}")]
    if keyword in ("enum", "const"):
        options = limit if keyword == "enum" else [limit]
        listed = ", ".join(json.dumps(o) for o in options)
        word = "one of " if len(options) > 1 else ""
        return [(json_path(path), f"expected {word}{listed}, found {_found(value)}")]
    bounds = {
        "minimum": f"at least {limit}",
        "maximum": f"at most {limit}",
        "minLength": f"at least {limit} character{'s' if limit != 1 else ''}",
        "minItems": f"at least {limit} item{'s' if limit != 1 else ''}",
        "maxItems": f"at most {limit} item{'s' if limit != 1 else ''}",
    }
    if keyword in bounds:
        shown = f"{len(value)} items" if keyword.endswith("Items") else _found(value)
        return [(json_path(path), f"expected {bounds[keyword]}, found {shown}")]
    return [(json_path(path), str(error.message))]


def _types(names: Any) -> str:
    listed = [names] if isinstance(names, str) else list(names)
    return " or ".join(_TYPE_WORDS.get(n, n) for n in listed)


def _expected(schema: Any) -> str:
    """What a field's schema asks for, in words ('a string', 'one of "a", "b"', 'a value')."""
    if isinstance(schema, Mapping):
        if "type" in schema:
            return _types(schema["type"])
        if "enum" in schema:
            return "one of " + ", ".join(json.dumps(o) for o in schema["enum"])
        if "$ref" in schema:
            return "an object"
    return "a value"


def _found(value: Any) -> str:
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
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
