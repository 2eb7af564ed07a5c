"""A served entity's `batching`: the value, its records, the replica generation, and how
a manifest gives it (located errors)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from declare.fmt import format_text
from declare.manifests import ENDPOINT_SCHEMA, load_manifest_file, load_schema, validate_document
from declare.model import Batching, EndpointSpec, EntitySpec, ReplicaSpec
from declare.model.batching import BATCH_SIZE_MAX, BATCH_SIZE_MIN, DELAY_MESSAGE, MAX_DELAY_MS_MAX
from declare.state.document import generation_of
from tests.unit.planning_fixtures import desired, entity, model

BATCHING = Batching(max_batch_size=32, max_delay_ms=2.0)

# -- the value and its records ---------------------------------------------------------------


def test_batching_round_trips_through_json() -> None:
    assert BATCHING.to_json() == {"max_batch_size": 32, "max_delay_ms": 2.0}
    assert Batching.from_json(BATCHING.to_json()) == BATCHING
    assert BATCHING.describe() == "batches of up to 32 rows, waiting at most 2 ms for more"


def test_entity_and_replica_spec_carry_batching() -> None:
    e = entity("1", batching=BATCHING)
    assert EntitySpec.from_json(e.to_json()) == e
    spec = ReplicaSpec("p", "iris", "iris-1", "gen", 0, model(), batching=BATCHING)
    assert spec.to_json()["batching"] == BATCHING.to_json()
    assert ReplicaSpec.from_json(spec.to_json()) == spec


def test_records_written_before_batching_read_as_none() -> None:
    entity_json = entity("1").to_json()
    del entity_json["batching"]
    assert EntitySpec.from_json(entity_json).batching is None
    replica_json = ReplicaSpec("p", "iris", "iris-1", "gen", 0, model()).to_json()
    del replica_json["batching"]
    assert ReplicaSpec.from_json(replica_json).batching is None
    assert EntitySpec.from_json({**entity_json, "batching": None}).batching is None


# -- the replica generation -------------------------------------------------------------------


def test_generation_without_batching_is_what_it_was_before_batching() -> None:
    """Golden values computed before `batching` existed: an entity without it keeps its
    generation, so existing deployments are not replaced by an upgrade of declare."""
    d = desired(("1", 100))
    assert d.generation(d.spec.entities[0]) == "78fa9306d513"
    e = replace(entity("1", "Medium"), environment_vars={"A": "b"}, workload_type="GPU_SMALL")
    assert generation_of("docker", model(), e.to_json()) == "228bd6ab0138"
    entity_json = e.to_json()
    del entity_json["batching"]  # as a state written before batching records it
    assert generation_of("docker", model(), entity_json) == "228bd6ab0138"


def test_batching_is_part_of_the_generation() -> None:
    plain = entity("1")
    batched = entity("1", batching=BATCHING)
    other = entity("1", batching=Batching(64, 2.0))
    gens = {generation_of("local", model(), e.to_json()) for e in (plain, batched, other)}
    assert len(gens) == 3
    # 2 and 2.0 ms are one setting: one generation
    same = entity("1", batching=Batching(32, 2))
    assert generation_of("local", model(), same.to_json()) == generation_of(
        "local", model(), batched.to_json()
    )


# -- manifests --------------------------------------------------------------------------------

MANIFEST = """\
name: iris
config:
  served_entities:
    - name: iris-1
      entity_name: iris
      entity_version: "1"
      batching:
{batching}
"""
ENTITY = "config.served_entities[0]"


def _load(tmp_path: Path, batching: str) -> tuple[list[EndpointSpec], list[str]]:
    path = tmp_path / "iris.yaml"
    path.write_text(MANIFEST.format(batching=batching))
    specs, problems = load_manifest_file(path)
    return specs, [str(p) for p in problems]


def test_manifest_batching_reaches_the_entity(tmp_path: Path) -> None:
    (spec,), problems = _load(tmp_path, "        max_batch_size: 32\n        max_delay_ms: 2")
    assert problems == []
    assert spec.entity("iris-1").batching == BATCHING
    assert spec.entity("iris-1").to_json()["batching"] == {
        "max_batch_size": 32,
        "max_delay_ms": 2.0,
    }


def test_manifest_without_batching_has_none() -> None:
    body = {"name": "e", "config": {"served_entities": [{"entity_name": "m", "entity_version": 1}]}}
    assert validate_document(body).entities[0].batching is None


SIZE = f"iris.yaml:8: {ENTITY}.batching.max_batch_size: must be a whole number from 2 to 1024"
DELAY = (
    f"iris.yaml:9: {ENTITY}.batching.max_delay_ms: must be a number of milliseconds, more than "
    "0 and at most 1000"
)


@pytest.mark.parametrize(
    ("size", "delay", "problem"),
    [
        ("1", "2", f"{SIZE}, got 1"),
        ("1025", "2", f"{SIZE}, got 1025"),
        ("8.5", "2", f"{SIZE}, got 8.5"),
        ('"32"', "2", f'{SIZE}, got "32"'),
        ("true", "2", f"{SIZE}, got true"),
        ("32", "0", f"{DELAY}, got 0"),
        ("32", "-1", f"{DELAY}, got -1"),
        ("32", "1000.5", f"{DELAY}, got 1000.5"),
        ("32", "2ms", f'{DELAY}, got "2ms"'),
        ("32", ".nan", f"{DELAY}, got nan"),
    ],
)
def test_manifest_batching_out_of_range_is_located(
    tmp_path: Path, size: str, delay: str, problem: str
) -> None:
    specs, problems = _load(
        tmp_path, f"        max_batch_size: {size}\n        max_delay_ms: {delay}"
    )
    assert specs == []
    assert problems == [problem]


def test_manifest_batching_unknown_key_names_the_allowed_ones(tmp_path: Path) -> None:
    _, problems = _load(
        tmp_path, "        max_batch_size: 32\n        max_delay_ms: 2\n        max_wait_ms: 3"
    )
    assert problems == [
        f"iris.yaml:10: {ENTITY}.batching.max_wait_ms: unknown field 'max_wait_ms'; allowed: "
        "max_batch_size, max_delay_ms (did you mean 'max_delay_ms'?)"
    ]


def test_manifest_batching_must_be_a_mapping_with_both_fields(tmp_path: Path) -> None:
    path = tmp_path / "iris.yaml"
    path.write_text(MANIFEST.replace("      batching:\n{batching}", "      batching: true"))
    assert [str(p) for p in load_manifest_file(path)[1]] == [
        f"iris.yaml:7: {ENTITY}.batching: must be a mapping, got true"
    ]
    _, problems = _load(tmp_path, "        max_batch_size: 32")
    assert problems == [f"iris.yaml:7: {ENTITY}.batching.max_delay_ms: is required"]


def test_schema_bounds_are_the_model_bounds() -> None:
    fields = load_schema(ENDPOINT_SCHEMA)["$defs"]["batching"]["properties"]
    size, delay = fields["max_batch_size"], fields["max_delay_ms"]
    assert (size["minimum"], size["maximum"]) == (BATCH_SIZE_MIN, BATCH_SIZE_MAX)
    assert (delay["exclusiveMinimum"], delay["maximum"]) == (0, MAX_DELAY_MS_MAX)
    assert delay["x-declare-message"] == DELAY_MESSAGE


def test_fmt_puts_batching_after_environment_vars() -> None:
    text = (
        "name: iris\nconfig:\n  served_entities:\n  - batching:\n      max_delay_ms: 2\n"
        "      max_batch_size: 32\n    environment_vars: {}\n    name: iris-1\n"
    )
    assert format_text(text, "iris.yaml") == (
        "name: iris\nconfig:\n  served_entities:\n    - name: iris-1\n      environment_vars: {}\n"
        "      batching:\n        max_batch_size: 32\n        max_delay_ms: 2\n"
    )
