"""A served entity's `batching`: the value, its records, and the replica generation (pure)."""

from __future__ import annotations

from dataclasses import replace

from declare.model import Batching, EntitySpec, ReplicaSpec
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
