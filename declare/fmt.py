"""`declare fmt`: write manifests in one canonical layout, keeping their comments.

A YAML manifest is read with ruamel.yaml's round-trip loader, which keeps comments, and
written back with:
- keys in a canonical order: `kind, name, provider, description, config{served_entities,
  served_models, traffic_config, auto_capture_config}, rate_limits, tags, rollout`, then the
  other Databricks sections; inside a served entity `name, entity_name, entity_version,
  model_uri, workload_size, workload_type, replicas, scale_to_zero_enabled,
  environment_vars, batching{max_batch_size, max_delay_ms}`, then the Databricks-only fields
  declare keeps raw (the loader's `declare.manifests.ENTITY_EXTRA_FIELDS`, in its order); a
  route `served_entity_name | served_model_name, traffic_percentage`; a tag `key, value`.
  Keys declare does not know keep their relative order, after the known ones;
- 2-space indentation, sequences indented under their key (`  - item`);
- strings quoted only where YAML needs it, and then with double quotes (`"1"`, `"true"`);
- comments kept: an end-of-line comment stays with its key, comment lines above a key move
  with that key, and every comment line is indented like the line it precedes.
A JSON manifest is written as 2-space JSON with the same key order (JSON has no comments).
`declare.yaml` gets the layout and the quoting, but no reordering.

Pure text-to-text (`format_text`); files are read and written by `declare.commands.fmt`.
Does not validate the manifest (see `declare validate`): a file that is valid YAML but a
wrong manifest is formatted all the same, and a file that is not YAML raises ManifestError.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Sequence
from typing import Any

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, ScalarString
from ruamel.yaml.tag import Tag
from ruamel.yaml.tokens import CommentToken

from declare.errors import LocatedError, Location, ManifestError
from declare.manifests import ENTITY_EXTRA_FIELDS

# -- the canonical key order ---------------------------------------------------------------

TOP_ORDER = (
    "kind",
    "name",
    "provider",
    "description",
    "config",
    "rate_limits",
    "tags",
    "rollout",
    "route_optimized",
    "ai_gateway",
    "budget_policy_id",
    "email_notifications",
)
CONFIG_ORDER = ("served_entities", "served_models", "traffic_config", "auto_capture_config")
ENTITY_ORDER = (
    "name",
    "entity_name",
    "entity_version",
    "model_name",
    "model_version",
    "model_uri",
    "workload_size",
    "workload_type",
    "replicas",
    "scale_to_zero_enabled",
    "environment_vars",
    "batching",
    # then the Databricks-only fields declare keeps raw, in the order the loader lists them
    *ENTITY_EXTRA_FIELDS,
)
BATCHING_ORDER = ("max_batch_size", "max_delay_ms")
ROUTE_ORDER = ("served_entity_name", "served_model_name", "traffic_percentage")
TAG_ORDER = ("key", "value")
RATE_LIMIT_ORDER = ("calls", "key", "renewal_period")
CAPTURE_ORDER = ("catalog_name", "schema_name", "table_name_prefix", "enabled")


def _order_for(path: tuple[str, ...]) -> Sequence[str] | None:
    """The key order of the mapping at `path` (keys of mappings, "[]" for list items)."""
    return {
        (): TOP_ORDER,
        ("config",): CONFIG_ORDER,
        ("config", "served_entities", "[]"): ENTITY_ORDER,
        ("config", "served_models", "[]"): ENTITY_ORDER,
        ("config", "served_entities", "[]", "batching"): BATCHING_ORDER,
        ("config", "traffic_config", "routes", "[]"): ROUTE_ORDER,
        ("config", "auto_capture_config"): CAPTURE_ORDER,
        ("tags", "[]"): TAG_ORDER,
        ("rate_limits", "[]"): RATE_LIMIT_ORDER,
    }.get(path)


def _sorted_keys(keys: Sequence[Any], order: Sequence[str]) -> list[Any]:
    rank = {k: i for i, k in enumerate(order)}
    return sorted(keys, key=lambda k: (rank.get(k, len(order)), keys.index(k)))


def canonical_order(value: Any, path: tuple[str, ...] = ()) -> Any:
    """Plain JSON values with mapping keys in the canonical order (for JSON manifests)."""
    if isinstance(value, dict):
        order = _order_for(path)
        keys = list(value)
        if order is not None:
            keys = _sorted_keys(keys, order)
        return {k: canonical_order(value[k], (*path, str(k))) for k in keys}
    if isinstance(value, list):
        return [canonical_order(v, (*path, "[]")) for v in value]
    return value


# -- comments ------------------------------------------------------------------------------
# ruamel.yaml attaches the comment lines between two keys to the end of the first key's
# value (its deepest last scalar). Reordering keys would carry a comment meant for the next
# key along with the previous one, so before reordering each such run of comment lines is
# taken off and set "before" the key it precedes.


def _deepest_last(node: Any) -> list[tuple[Any, Any]]:
    """The path to `node`'s deepest last element: (container, key or index) pairs."""
    path: list[tuple[Any, Any]] = []
    while isinstance(node, CommentedMap | CommentedSeq) and len(node):
        last = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
        path.append((node, last))
        node = node[last]
    return path


def _item_slot(container: Any, last: Any) -> tuple[list[Any], int]:
    if isinstance(container, CommentedMap):
        items = container.ca.items.setdefault(last, [None, None, None, None])
        return items, 2
    items = container.ca.items.setdefault(last, [None, None])
    return items, 0


def _split_token(text: str) -> tuple[str, list[str]]:
    """A comment token's end-of-line part and the full lines after it (blank lines as "")."""
    if text.startswith("#"):
        eol, _, rest = text.partition("\n")
        eol += "\n"
    else:  # the token starts with the newline that ends the value's line
        eol, rest = "", text[1:] if text.startswith("\n") else text
    lines = [line.strip() for line in rest.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return eol, lines


def _take_from_slot(items: list[Any], index: int) -> list[str]:
    token = items[index]
    if not isinstance(token, CommentToken):
        return []
    eol, lines = _split_token(token.value)
    if eol:
        token.value = eol
    else:
        items[index] = None
    return lines


def _take_after(m: CommentedMap, key: Any) -> list[str]:
    """Remove and return the comment lines that follow `key`'s value in the text."""
    path = _deepest_last(m[key])
    if not path:
        return _take_from_slot(*_item_slot(m, key))
    lines = _take_from_slot(*_item_slot(*path[-1]))
    # Comments after a flow collection are kept at the end of the enclosing containers.
    for container, _ in reversed(path):
        for token in container.ca.end or []:
            if isinstance(token, CommentToken):
                lines += [line.strip() for line in token.value.rstrip("\n").split("\n")]
        container.ca.end = []
    return lines


def _token(line: str) -> CommentToken:
    from ruamel.yaml.error import CommentMark

    return CommentToken(f"{line}\n", CommentMark(0), None)


def _put_after(m: CommentedMap, key: Any, lines: list[str]) -> None:
    if not lines:
        return
    path = _deepest_last(m[key])
    items, index = _item_slot(*path[-1]) if path else _item_slot(m, key)
    text = "".join(f"{line}\n" for line in lines)
    token = items[index]
    if isinstance(token, CommentToken):
        token.value = token.value + text
    else:
        items[index] = _token("\n" + text.removesuffix("\n"))


def _set_before(m: CommentedMap, key: Any, lines: list[str], first: bool) -> None:
    """Comment lines above `key` (blank lines kept); their indentation is fixed at the end."""
    if first:
        while lines and not lines[0]:
            lines = lines[1:]
    if not lines:
        return
    items = m.ca.items.setdefault(key, [None, None, None, None])
    if items[1] is None:
        items[1] = []
    items[1][:0] = [_token(line) for line in lines]


def _reorder(m: CommentedMap, order: Sequence[str]) -> None:
    keys = list(m)
    new = _sorted_keys(keys, order)
    if new == keys:
        return
    # Comment lines between key i and key i+1 describe key i+1; those after the last key
    # stay at the end of the mapping.
    leading = {after: _take_after(m, before) for before, after in itertools.pairwise(keys)}
    tail = _take_after(m, keys[-1])
    for key in new:
        m.move_to_end(key)
    for i, key in enumerate(new):
        _set_before(m, key, leading.get(key, []), first=i == 0)
    _put_after(m, new[-1], tail)


def _walk(node: Any, path: tuple[str, ...], reorder: bool) -> None:
    if isinstance(node, CommentedMap):
        order = _order_for(path) if reorder else None
        if order is not None:
            _reorder(node, order)
        for key in list(node):
            node[key] = _quoted(node[key])
            _walk(node[key], (*path, str(key)), reorder)
    elif isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            node[i] = _quoted(item)
            _walk(node[i], (*path, "[]"), reorder)


# -- quoting -------------------------------------------------------------------------------

_PLAIN_RISK = re.compile(r"""^[-?:,\[\]{}#&*!|>'"%@`\s]|[:#]\s|\s$|:$|^$""")


def _quoted(value: Any) -> Any:
    """A string that YAML would read as something else, or that plain style cannot hold,
    as a double-quoted scalar; numbers in their plain decimal form (`0o17`, `0x1f` and `1_000`
    mean different things to YAML 1.1 and 1.2 readers); other values unchanged (block scalars
    keep their style)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if not isinstance(value, str) or (
        isinstance(value, ScalarString) and not isinstance(value, DoubleQuotedScalarString)
    ):
        return value
    if _needs_quotes(value):
        return DoubleQuotedScalarString(value)
    return str(value)


def _needs_quotes(text: str) -> bool:
    if _PLAIN_RISK.search(text) or "\n" in text:
        return True
    # Quoted when a YAML 1.1 reader (PyYAML, which `declare` uses: `yes`, `on`, `0o7`) or a
    # YAML 1.2 reader (most editors: `0o7`) would read it as something else than a string.
    str_tag = "tag:yaml.org,2002:str"
    yaml11 = _pyyaml_tag(text, (True, False))
    yaml12 = VersionedResolver(version=(1, 2)).resolve(ScalarNode, text, (True, False))
    return yaml11 != str_tag or str(yaml12) != str_tag


# -- comment indentation -------------------------------------------------------------------


def _indent_comments(text: str) -> str:
    """Indent each full-line comment like the next content line (the one it describes)."""
    lines = text.split("\n")
    out = list(lines)
    next_indent = 0
    for i in range(len(lines) - 1, -1, -1):
        stripped = lines[i].lstrip(" ")
        if not stripped:
            out[i] = ""
        elif stripped.startswith("#"):
            out[i] = " " * next_indent + stripped
        else:
            next_indent = len(lines[i]) - len(stripped)
            out[i] = lines[i].rstrip()
    return "\n".join(out)


# -- entry points ----------------------------------------------------------------------------


def _pyyaml_tag(value: str, implicit: tuple[bool, bool]) -> str:
    """The tag PyYAML gives a plain scalar (YAML 1.1: `yes` bool, `1e3` str, `007` int)."""
    resolver: Any = pyyaml.resolver.Resolver()
    return str(resolver.resolve(pyyaml.ScalarNode, value, implicit))


class _PyYAMLResolver(VersionedResolver):
    """Plain scalars typed exactly as PyYAML (declare's manifest reader, YAML 1.1) types them.

    ruamel.yaml's own YAML 1.1 mode is more lenient (it reads `1e3` as a float, PyYAML as a
    string); formatting must not change what declare reads.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0]:
            return Tag(suffix=_pyyaml_tag(value, implicit))
        return super().resolve(kind, value, implicit)


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096  # never fold long strings
    y.preserve_quotes = False
    # null written out (ruamel's round-trip default writes nothing after the colon).
    y.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return y


def _bad(display: str, exc: Exception) -> ManifestError:
    line = 0
    mark = getattr(exc, "problem_mark", None) if isinstance(exc, MarkedYAMLError) else None
    if mark is not None:
        line = int(mark.line) + 1
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ManifestError(
        [LocatedError(Location(display, line, "(syntax)"), f"cannot format: {problem}")]
    )


def format_yaml(text: str, display: str = "<yaml>", reorder: bool = True) -> str:
    y = _yaml()
    # Read as YAML 1.1, as declare's own reader (PyYAML) does: `yes` is true, `007` is 7.
    reader = _yaml()
    reader.version = (1, 1)
    reader.Resolver = _PyYAMLResolver
    try:
        documents = list(reader.load_all(text))
    except (YAMLError, ValueError) as exc:
        raise _bad(display, exc) from None
    for doc in documents:
        _walk(doc, (), reorder)
    stream = io.StringIO()
    try:
        y.dump_all(documents, stream)
    except YAMLError as exc:  # pragma: no cover - what loads also dumps
        raise _bad(display, exc) from None
    out = _indent_comments(stream.getvalue())
    return out.rstrip("\n") + "\n" if out.strip() else ""


def format_json(text: str, display: str = "<json>") -> str:
    try:
        data = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", 0)
        raise ManifestError(
            [LocatedError(Location(display, line, "(syntax)"), f"cannot format: {exc}")]
        ) from None
    return json.dumps(canonical_order(data), indent=2, ensure_ascii=False) + "\n"


def format_text(text: str, filename: str, reorder: bool = True) -> str:
    """The canonical form of a manifest (JSON by a `.json` suffix, else YAML)."""
    if filename.lower().endswith(".json"):
        return format_json(text, filename)
    return format_yaml(text, filename, reorder=reorder)
