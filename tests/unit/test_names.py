"""One set of name limits (declare.model.names), checked when manifests are validated: the
endpoint name (63 characters), and the replica ids a provider names files and containers
after (`<endpoint>-<entity>-<6 hex>`, at most 128), so that nothing fails at apply with a
name too long (ENAMETOOLONG, a cut container name)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from declare.errors import ProviderError
from declare.model import (
    ENDPOINT_NAME_MAX,
    ENTITY_NAME_MAX,
    PROJECT_NAME_MAX,
    REPLICA_ID_MAX,
    ReplicaSpec,
    ResolvedModel,
)
from declare.procs import ProcessId
from providers._shared import new_replica_id
from providers.docker.containers import container_name
from providers.local.records import ReplicaRecord, ReplicaRecords
from tests.unit.conftest import Ran

REPO = Path(__file__).resolve().parents[2]
LONGEST_ENDPOINT = "e" * 63
# The longest entity name beside it: 63 + '-' + 57 + '-<6 hex>' = 128 characters.
LONGEST_ENTITY = "m" * 57


def _project(folder: Path, endpoint: str, entity_lines: str) -> Path:
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "MLmodel").write_text("flavors: {}\n")
    (folder / "serving.yaml").write_text(
        f"name: {endpoint}\nconfig:\n  served_entities:\n{entity_lines}"
    )
    return folder


def _named(name: str) -> str:
    return f"    - name: {name}\n      model_uri: ./model\n"


def test_an_endpoint_name_over_63_characters_is_refused_at_validate(
    tmp_path: Path, declare_cli: Callable[..., Ran]
) -> None:
    _project(tmp_path, "e" * 64, _named("m"))
    result = declare_cli("validate", str(tmp_path))
    assert result.returncode == 1
    assert "serving.yaml:1: name: must be 1 to 63 letters, digits, '-' or '_'" in result.stderr
    assert "Traceback" not in result.stderr

    _project(tmp_path, "e" * 63, _named("m"))
    assert declare_cli("validate", str(tmp_path)).returncode == 0


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_names_making_replica_ids_too_long_are_refused_before_apply(
    command: str, tmp_path: Path, declare_cli: Callable[..., Ran]
) -> None:
    _project(tmp_path, LONGEST_ENDPOINT, _named("m" * 70))
    result = declare_cli(command, str(tmp_path))
    assert result.returncode == 1
    assert (
        "serving.yaml:4: config.served_entities[0].name: with the endpoint name "
        "(63 characters), this served entity name (70 characters) makes replica ids of "
        "141 characters (<endpoint>-<entity>-<6 hex>); providers name their files and "
        "containers after replica ids of at most 128: shorten the two names by 13 "
        "characters together"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "declare.tfstate.json").exists()


def test_a_derived_entity_name_is_checked_too(
    tmp_path: Path, declare_cli: Callable[..., Ran]
) -> None:
    """`<entity_name>-<entity_version>`, the name Databricks derives, at the entity's line."""
    entity = f"    - entity_name: {'m' * 60}\n      entity_version: 1\n"
    _project(tmp_path, LONGEST_ENDPOINT, entity)
    result = declare_cli("validate", str(tmp_path))
    assert result.returncode == 1
    assert re.search(
        r"serving\.yaml:4: config\.served_entities\[0\]\.name: .*this served entity name "
        r"\(62 characters\) makes replica ids of 133 characters",
        result.stderr,
    ), result.stderr


def _spec(endpoint: str, entity: str) -> ReplicaSpec:
    model = ResolvedModel(uri="./model", pinned_uri="./model")
    return ReplicaSpec("p" * 63, endpoint, entity, "g1", 0, model)


def test_the_longest_names_validate_accepts_fit_every_provider(
    tmp_path: Path, declare_cli: Callable[..., Ran]
) -> None:
    project = _project(tmp_path / "project", LONGEST_ENDPOINT, _named(LONGEST_ENTITY))
    assert declare_cli("validate", str(project)).returncode == 0
    _project(project, LONGEST_ENDPOINT, _named(LONGEST_ENTITY + "m"))
    assert declare_cli("validate", str(project)).returncode == 1

    replica_id = new_replica_id(_spec(LONGEST_ENDPOINT, LONGEST_ENTITY), set())
    assert len(replica_id) == REPLICA_ID_MAX
    # The local provider's record, its temp file, the log and the stopped log: real files.
    records = ReplicaRecords(tmp_path / "local")
    records.logs_dir.mkdir(parents=True)
    log = records.log_path(replica_id)
    log.write_text("started\n")
    record = ReplicaRecord(
        id=replica_id,
        labels={"declare.endpoint": LONGEST_ENDPOINT, "declare.entity": LONGEST_ENTITY,
                "declare.generation": "g1"},
        process=ProcessId(pid=4_194_304, start_time=1),
        host="127.0.0.1",
        port=8000,
        log=str(log),
        pinned_uri="./model",
        source="./model",
    )  # fmt: skip
    records.write(record)
    assert [r.id for r in records.read()] == [replica_id]
    records.forget(record.handle())
    assert records.stopped_log_of(record.handle()).read_text() == "started\n"
    # The docker provider's container name holds the whole id, its unique end included.
    name = container_name("p" * PROJECT_NAME_MAX, replica_id)
    assert name == f"declare-{'p' * PROJECT_NAME_MAX}-{replica_id}"


def test_providers_refuse_names_that_bypassed_validate() -> None:
    with pytest.raises(ProviderError, match="makes replica ids of 141 characters"):
        new_replica_id(_spec(LONGEST_ENDPOINT, "m" * 70), set())
    with pytest.raises(ProviderError, match="container name would be 201 characters"):
        container_name("p" * (PROJECT_NAME_MAX + 1), "r" * REPLICA_ID_MAX)


def test_the_schemas_state_the_same_limits() -> None:
    endpoint = json.loads((REPO / "schemas" / "endpoint.schema.json").read_text())
    project = json.loads((REPO / "schemas" / "project.schema.json").read_text())
    assert endpoint["properties"]["name"]["pattern"] == f"^[A-Za-z0-9_-]{{1,{ENDPOINT_NAME_MAX}}}$"
    entity = endpoint["$defs"]["entity_name_field"]["pattern"]
    assert entity == f"^[A-Za-z0-9_-]{{1,{ENTITY_NAME_MAX}}}$"
    first_and_rest = f"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{PROJECT_NAME_MAX - 1}}}$"
    assert project["properties"]["project"]["pattern"] == first_and_rest
