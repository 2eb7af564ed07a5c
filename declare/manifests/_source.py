"""Reading manifest files into plain values, with the line of every field.

A YAML file is composed with PyYAML (safe tags only) and turned into plain Python values
(dict, list, str, int, float, bool, None) by our own walk over the nodes, which records the
1-based line of each field path and reports, instead of raising:
duplicate keys, non-string keys, unsupported tags, recursive or exploding aliases, too deep
nesting, syntax errors and undecodable bytes. A JSON file is parsed by `json` (its values are
exact JSON) and composed by the YAML parser only to learn lines; when the YAML parser cannot
read it, lines fall back to 1.

Does not know what a manifest means: no schema, no semantics (see `_schema`, `_endpoint`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from declare.errors import LocatedError, Location

FieldPath = tuple[str | int, ...]

MAX_DEPTH = 64  # nesting deeper than this is refused (and protects every later recursion)
MAX_FLOW_DEPTH = 4 * MAX_DEPTH  # brackets counted in the raw text, before parsing
MAX_VALUES = 100_000  # values per file, counting alias expansions ("billion laughs")

SYNTAX_FIELD = "(syntax)"
DOCUMENT_FIELD = "(document)"

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("null", "bool", "int", "float", "str")}


def format_path(path: FieldPath) -> str:
    """`("config", "served_entities", 0, "name")` -> `config.served_entities[0].name`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or DOCUMENT_FIELD


@dataclass(frozen=True)
class Document:
    """One document of a manifest file: its value and where each of its fields is."""

    file: str  # as shown to the user (relative to the project folder)
    index: int  # 0-based position among the file's documents
    value: Any
    lines: Mapping[FieldPath, int] = field(default_factory=dict)
    start_line: int = 1
    # Problems met reading this document (e.g. an unsupported tag); the value holds None there.
    read_problems: tuple[LocatedError, ...] = ()

    def line(self, path: FieldPath) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found:
                return found
        return self.start_line

    def problem(self, path: FieldPath, message: str) -> LocatedError:
        return LocatedError(Location(self.file, self.line(path), format_path(path)), message)


@dataclass
class _Walk:
    file: str
    lines: dict[FieldPath, int] = field(default_factory=dict)
    problems: list[LocatedError] = field(default_factory=list)
    count: int = 0
    active: set[int] = field(default_factory=set)
    exhausted: bool = False

    def report(self, line: int, path: FieldPath, message: str) -> None:
        self.problems.append(LocatedError(Location(self.file, line, format_path(path)), message))


_constructor = SafeConstructor()


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _scalar(node: ScalarNode, path: FieldPath, walk: _Walk) -> Any:
    if node.tag == _TAG + "timestamp":
        return node.value  # dates stay text, as JSON would have them
    if node.tag not in _SCALAR_TAGS:
        walk.report(_line(node), path, f"unsupported YAML tag {node.tag!r}")
        return None
    try:
        return _constructor.construct_object(node)
    except ValueError:  # e.g. an integer with more digits than Python converts
        walk.report(_line(node), path, "number is too large")
        return None
    except yaml.YAMLError as exc:
        walk.report(_line(node), path, f"cannot read value: {exc}")
        return None


def _describe_key(node: Node) -> str:
    if isinstance(node, ScalarNode):
        return repr(str(node.value))[:60]
    return "a mapping" if isinstance(node, MappingNode) else "a list"


def _to_value(node: Node, path: FieldPath, depth: int, walk: _Walk) -> Any:
    if walk.exhausted:
        return None
    walk.count += 1
    if walk.count > MAX_VALUES:
        walk.exhausted = True
        walk.report(_line(node), path, f"document is too large (over {MAX_VALUES} values)")
        return None
    if depth > MAX_DEPTH:
        walk.report(_line(node), path, f"nested deeper than {MAX_DEPTH} levels")
        return None
    if isinstance(node, ScalarNode):
        return _scalar(node, path, walk)
    if id(node) in walk.active:
        walk.report(_line(node), path, "an alias refers to a value that contains it")
        return None
    walk.active.add(id(node))
    try:
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                walk.report(_line(node), path, f"unsupported YAML tag {node.tag!r}")
                return None
            items = []
            for i, item in enumerate(node.value):
                walk.lines.setdefault((*path, i), _line(item))
                items.append(_to_value(item, (*path, i), depth + 1, walk))
            return items
        if isinstance(node, MappingNode):
            if node.tag != _TAG + "map":
                walk.report(_line(node), path, f"unsupported YAML tag {node.tag!r}")
                return None
            return _mapping(node, path, depth, walk)
    finally:
        walk.active.discard(id(node))
    walk.report(_line(node), path, "unsupported YAML node")  # pragma: no cover
    return None


def _mapping(node: MappingNode, path: FieldPath, depth: int, walk: _Walk) -> dict[str, Any]:
    result: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    merges: list[Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _TAG + "merge":
            merges.append(value_node)
            continue
        key: Any = None
        if isinstance(key_node, ScalarNode):
            key = _scalar(key_node, path, walk)
        if not isinstance(key, str):
            walk.report(
                _line(key_node),
                path,
                f"keys must be strings, got {_describe_key(key_node)} (quote it)",
            )
            continue
        if key in first_line:
            walk.report(
                _line(key_node),
                (*path, key),
                f"duplicate key {key!r} (first at line {first_line[key]})",
            )
            continue
        first_line[key] = _line(key_node)
        walk.lines.setdefault((*path, key), _line(key_node))
        result[key] = _to_value(value_node, (*path, key), depth + 1, walk)
    # Merge keys (<<: *base) fill in what the mapping does not set itself; earlier merged
    # mappings win over later ones, as YAML specifies.
    for merge in merges:
        sources = merge.value if isinstance(merge, SequenceNode) else [merge]
        for source in sources:
            if not isinstance(source, MappingNode):
                walk.report(_line(merge), path, "'<<' must merge a mapping or a list of mappings")
                continue
            merged = _to_value(source, path, depth, walk)
            if isinstance(merged, dict):
                for key, value in merged.items():
                    result.setdefault(key, value)
    return result


def _mark_line(exc: BaseException) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    return 1


def _yaml_message(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem:
        text = f"{context}, {problem}" if context else str(problem)
    else:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    column = f" (column {int(mark.column) + 1})" if mark is not None else ""
    return f"invalid YAML: {text}{column}"


def _runaway_nesting_line(text: str) -> int:
    """The line where `[`/`{` nesting passes MAX_FLOW_DEPTH, or 0.

    PyYAML's scanner slows down quadratically with flow nesting (seconds for a few
    thousand brackets), so absurd nesting is refused before parsing. Brackets inside
    strings count too; no real manifest comes near the bound.
    """
    depth = 0
    for index, char in enumerate(text):
        if char in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                return text.count("\n", 0, index) + 1
        elif char in "]}":
            depth = max(0, depth - 1)
    return 0


def _compose(text: str, file: str) -> tuple[list[Document], list[LocatedError]]:
    walk = _Walk(file)
    runaway = _runaway_nesting_line(text)
    if runaway:
        walk.report(runaway, (SYNTAX_FIELD,), f"nested deeper than {MAX_DEPTH} levels")
        return [], walk.problems
    documents: list[Document] = []
    try:
        for index, node in enumerate(_compose_all(text)):
            if node is None:
                continue
            walk.lines = {}
            before = len(walk.problems)
            value = _to_value(node, (), 0, walk)
            if value is None and isinstance(node, ScalarNode) and not node.value:
                continue  # an empty document (e.g. between two `---`)
            found = tuple(walk.problems[before:])
            documents.append(Document(file, index, value, dict(walk.lines), _line(node), found))
    except yaml.YAMLError as exc:
        walk.report(_mark_line(exc), (SYNTAX_FIELD,), _yaml_message(exc))
        return [], walk.problems
    except RecursionError:
        walk.report(1, (SYNTAX_FIELD,), f"nested deeper than {MAX_DEPTH} levels")
        return [], walk.problems
    return documents, walk.problems


def _compose_all(text: str) -> Iterator[Node | None]:
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            yield loader.get_node()
    finally:
        loader.dispose()


def _decode(data: bytes, file: str) -> tuple[str | None, LocatedError | None]:
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        where = Location(file, line, SYNTAX_FIELD)
        return None, LocatedError(where, f"not UTF-8 text (byte {exc.start})")


def read_yaml(data: bytes, file: str) -> tuple[list[Document], list[LocatedError]]:
    """Every non-empty document of a YAML file, and every problem found reading it."""
    text, problem = _decode(data, file)
    if text is None:
        return [], [problem] if problem else []
    return _compose(text, file)


def read_json(data: bytes, file: str) -> tuple[list[Document], list[LocatedError]]:
    """The one document of a JSON file (values from `json`, lines from the YAML parser)."""
    text, problem = _decode(data, file)
    if text is None:
        return [], [problem] if problem else []
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        value = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as exc:
        where = Location(file, exc.lineno, SYNTAX_FIELD)
        return [], [LocatedError(where, f"invalid JSON: {exc.msg} (column {exc.colno})")]
    except (RecursionError, ValueError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return [], [LocatedError(Location(file, 1, SYNTAX_FIELD), f"invalid JSON: {reason}")]
    located, problems = _compose(text, file)
    if len(located) == 1 and not problems:
        return [Document(file, 0, value, located[0].lines, located[0].start_line)], []
    if problems and not any(p.location.field == SYNTAX_FIELD for p in problems):
        return [], problems  # the YAML walk found duplicates etc., with their lines
    # The YAML parser could not follow this JSON: keep json's value, lines fall back to 1.
    dup_problems = [
        LocatedError(Location(file, 1, key), f"duplicate key {key!r}") for key in duplicates
    ]
    if dup_problems:
        return [], dup_problems
    if _too_deep(value):
        return [], [
            LocatedError(Location(file, 1, SYNTAX_FIELD), f"nested deeper than {MAX_DEPTH} levels")
        ]
    return [Document(file, 0, value, {}, 1)], []


def _too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False
