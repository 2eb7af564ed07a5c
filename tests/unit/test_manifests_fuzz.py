"""Property: no input makes loading crash. Each one loads, or raises ManifestError whose
problems all name a file, a line and a field.

Inputs: random YAML/JSON structures, a valid manifest with one field replaced by junk
(wrong types, huge numbers, deep nesting, unicode), random text and binary bytes, and
hand-written YAML traps (duplicate keys, recursive and exploding aliases, unsafe tags).
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from declare.errors import ManifestError
from declare.manifests import load_project_manifests
from declare.model import EndpointSpec

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID: dict[str, Any] = {
    "name": "iris",
    "config": {
        "served_entities": [
            {"name": "a", "entity_name": "iris", "entity_version": "1", "workload_size": "Small"},
            {"model_uri": "models:/iris@champion", "environment_vars": {"K": "v"}},
        ],
        "traffic_config": {
            "routes": [
                {"served_entity_name": "a", "traffic_percentage": 60},
                {"served_model_name": "iris-champion", "traffic_percentage": 40},
            ]
        },
    },
    "tags": [{"key": "team", "value": "ml"}],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**20, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["Small", "models:/x/1", "runs:/r/m", "{{secrets/a/b}}", "100", "50%", ""]),
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["name", "config", "served_entities", "traffic_config", "routes", "tags"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(paths_of(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(paths_of(item, (*prefix, index)))
    return found


VALID_PATHS = paths_of(VALID)[1:]


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": [value]}
    return value


def load_files(files: dict[str, bytes]) -> tuple[EndpointSpec, ...] | ManifestError:
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        for name, data in files.items():
            (project / name).write_bytes(data)
        try:
            return load_project_manifests(project)  # no declare.yaml: the default settings
        except ManifestError as error:
            return error


def assert_loads_or_is_located(files: dict[str, bytes]) -> None:
    result = load_files(files)
    if isinstance(result, ManifestError):
        assert result.problems, "a ManifestError must list its problems"
        for problem in result.problems:
            assert problem.location.file in files, str(problem)
            assert problem.location.line >= 1, str(problem)
            assert problem.location.field, str(problem)
            assert problem.message, str(problem)
    else:
        for spec in result:
            assert sum(r.traffic_percentage for r in spec.routes) == 100
            assert {r.served_entity_name for r in spec.routes} <= {e.name for e in spec.entities}


def dump_yaml(value: Any) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False).encode()


@FUZZ
@given(values)
def test_random_structures(value: Any) -> None:
    assert_loads_or_is_located({"random.yaml": dump_yaml(value)})
    assert_loads_or_is_located({"random.json": json.dumps(value).encode()})


@FUZZ
@given(st.sampled_from(VALID_PATHS), st.one_of(values, st.integers(30, 200).map(deep)))
def test_valid_manifest_with_one_field_replaced(path: tuple[Any, ...], junk: Any) -> None:
    manifest = copy.deepcopy(VALID)
    target = manifest
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = junk
    assert_loads_or_is_located({"iris.yaml": dump_yaml(manifest)})
    assert_loads_or_is_located({"iris.json": json.dumps(manifest).encode()})


@FUZZ
@given(st.text(max_size=300), st.binary(max_size=300))
def test_random_text_and_bytes(text: str, data: bytes) -> None:
    assert_loads_or_is_located({"text.yaml": text.encode("utf-8", "surrogatepass")})
    assert_loads_or_is_located({"bytes.yaml": data, "bytes.json": data})


TRAPS = [
    "name: a\nname: b\nconfig: {}\n",
    "a: &x [*x]\n",
    "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    ),
    "!!python/object/apply:os.system ['true']\n",
    "name: !!binary aGVsbG8=\nconfig: {}\n",
    "[" * 3000 + "]" * 3000,
    "{" * 3000,
    "base: &b {name: x}\nmerged:\n  <<: [*b, 3]\n",
    "a: &m {<<: *m}\n",
    "? [complex, key]\n: value\n",
    "1: one\nnull: two\n",
    "name: iris\nconfig:\n  served_entities:\n"
    "    - model_uri: models:/i/1\n      replicas: 1e999\n",
    "name: x\nconfig:\n  served_entities: [{entity_name: e, entity_version: " + "9" * 5000 + "}]\n",
    "\ufeffname: bom\nconfig: {served_entities: [{model_uri: models:/b/1}]}\n",
    "name: x\t\nconfig:\n\t- tab\n",
    "--- !!set {a, b}\n",
    "---\n...\n---\n",
    "when: 2024-01-01\nname: d\nconfig: {served_entities: [{model_uri: models:/d/1}]}\n",
]


def test_yaml_traps() -> None:
    for trap in TRAPS:
        assert_loads_or_is_located({"trap.yaml": trap.encode()})
        assert_loads_or_is_located({"trap.json": trap.encode()})


def test_deep_json_nesting() -> None:
    for depth in (70, 900, 5000):
        text = '{"name": "x", "config": ' + '{"a": [' * depth + "1" + "]}" * depth + "}"
        assert_loads_or_is_located({"deep.json": text.encode()})
