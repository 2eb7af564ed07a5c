"""A state file with a wrong field is one located message, never a traceback: the file, the
field's JSON path, what was expected and what was found; the file is left as it was.

The schema (schemas/state.schema.json) is held to what declare writes: a state with every
field set passes it, and every field that state's JSON has is one the schema checks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from declare.commands import core
from declare.errors import StateDocumentError
from declare.manifests import load_schema
from declare.model import (
    WORKLOAD_SIZES,
    WORKLOAD_TYPES,
    AutoscalePolicy,
    BuildLog,
    EndpointSpec,
    EntitySpec,
    Guards,
    LogSource,
    RateLimit,
    ReplicaHandle,
    ResolvedModel,
    RolloutPolicy,
    Route,
)
from declare.state.document import (
    IN_PROGRESS,
    NOT_UPDATING,
    UPDATE_FAILED,
    EndpointRecord,
    RecordedGateway,
    RecordedRuntime,
    ReplicaRecord,
    State,
)
from declare.state.scaling import EntityScale, ScaleEvent
from declare.state.schema import check_document, load_state
from tests.unit.conftest import Ran
from tests.unit.fake_world import World

REPO = Path(__file__).resolve().parents[2]


# -- through the CLI -------------------------------------------------------------------------


@pytest.fixture
def applied(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project on the fake provider, applied once: its state file holds endpoint demo
    with one replica."""
    (world.folder / "model").mkdir()
    (world.folder / "model" / "MLmodel").write_text("flavors: {}\n")
    (world.folder / "demo.yaml").write_text(
        "name: demo\nprovider: fake\nconfig:\n  served_entities:\n"
        "    - name: m\n      model_uri: ./model\n"
    )
    monkeypatch.setattr(core, "open_project", lambda *args, **kwargs: world.project())
    yield world.folder / "state" / "declare.tfstate.json"


def _damage(path: Path, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))
    return path.read_bytes()


def _replica(doc: dict[str, Any]) -> dict[str, Any]:
    replica: dict[str, Any] = doc["endpoints"]["demo"]["replicas"][0]
    return replica


DAMAGES: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (
        lambda d: d["endpoints"]["demo"].update(replicas="x"),
        'endpoints.demo.replicas: expected an array or null, found "x"',
    ),
    (
        lambda d: _replica(d).update(index="x"),
        'endpoints.demo.replicas[0].index: expected an integer, found "x"',
    ),
    (
        lambda d: _replica(d)["handle"].pop("url"),
        "endpoints.demo.replicas[0].handle.url: expected a string, found no such field",
    ),
    (
        lambda d: d["endpoints"]["demo"]["spec"]["served_entities"][0].update(workload_size="Huge"),
        'endpoints.demo.spec.served_entities[0].workload_size: expected one of "Small", '
        '"Medium", "Large", found "Huge"',
    ),
    (
        lambda d: d["endpoints"]["demo"]["status"].update(config_update=3),
        'endpoints.demo.status.config_update: expected one of "NOT_UPDATING", "IN_PROGRESS", '
        '"UPDATE_FAILED", found 3',
    ),
    (
        lambda d: d["endpoints"]["demo"]["routes"][0].update(traffic_percentage=[100]),
        "endpoints.demo.routes[0].traffic_percentage: expected an integer, found an array",
    ),
]


@pytest.mark.parametrize(
    ("damage", "says"),
    DAMAGES,
    ids=["replicas-x", "index-x", "url-missing", "size-huge", "status-3", "traffic-list"],
)
def test_plan_on_a_damaged_state_is_one_located_message(
    damage: Callable[[dict[str, Any]], None],
    says: str,
    applied: Path,
    declare_cli: Callable[..., Ran],
) -> None:
    assert declare_cli("apply", "--auto-approve", str(applied.parents[1])).returncode == 0
    before = _damage(applied, damage)
    backup = applied.with_name("declare.tfstate.json.backup").read_bytes()

    result = declare_cli("plan", str(applied.parents[1]))
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: the state at {applied} cannot be read: 1 problem:")
    assert f"  {applied}: {says}\n" in result.stderr
    assert "Nothing was changed." in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert applied.read_bytes() == before
    assert applied.with_name("declare.tfstate.json.backup").read_bytes() == backup


@pytest.mark.parametrize(
    "command",
    [
        ("show",),
        ("status",),
        ("state", "list"),
        ("apply", "--auto-approve"),
        ("destroy", "--auto-approve"),
    ],
    ids=" ".join,
)
def test_every_command_that_reads_the_state_stops_there(
    command: tuple[str, ...], applied: Path, declare_cli: Callable[..., Ran]
) -> None:
    assert declare_cli("apply", "--auto-approve", str(applied.parents[1])).returncode == 0
    before = _damage(applied, lambda d: _replica(d).update(ready="yes"))
    result = declare_cli(*command, str(applied.parents[1]))
    assert result.returncode == 1
    assert (
        f'{applied}: endpoints.demo.replicas[0].ready: expected true or false, found "yes"'
    ) in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert applied.read_bytes() == before


def test_all_problems_of_a_file_are_reported_together(
    applied: Path, declare_cli: Callable[..., Ran]
) -> None:
    assert declare_cli("apply", "--auto-approve", str(applied.parents[1])).returncode == 0

    def two(doc: dict[str, Any]) -> None:
        doc["gateway"] = {"host": "127.0.0.1", "port": "8787", "settings_hash": "h"}
        _replica(doc)["started_at"] = "yesterday"

    _damage(applied, two)
    result = declare_cli("plan", str(applied.parents[1]))
    assert result.returncode == 1
    assert "cannot be read: 2 problems:" in result.stderr
    assert f'{applied}: gateway.port: expected an integer, found "8787"' in result.stderr
    assert (
        f'{applied}: endpoints.demo.replicas[0].started_at: expected a number, found "yesterday"'
    ) in result.stderr


def test_the_cli_process_prints_one_message(tmp_path: Path) -> None:
    """`declare plan` as its own process, on a hand-written state with a wrong type."""
    (tmp_path / "state").mkdir()
    state = tmp_path / "state" / "declare.tfstate.json"
    doc = {
        "format_version": 1,
        "serial": 4,
        "lineage": "3b9f0c2e-0000-4000-8000-000000000000",
        "gateway": None,
        "endpoints": {"iris": {"name": "iris", "provider": "local", "replicas": "x"}},
    }
    state.write_text(json.dumps(doc))
    before = state.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "declare", "plan", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert f'{state}: endpoints.iris.replicas: expected an array or null, found "x"' in (
        result.stderr
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert state.read_bytes() == before


def test_state_push_refuses_a_damaged_file(
    applied: Path, tmp_path: Path, declare_cli: Callable[..., Ran]
) -> None:
    assert declare_cli("apply", "--auto-approve", str(applied.parents[1])).returncode == 0
    stored = applied.read_bytes()
    bad = tmp_path / "pushed.json"
    doc = json.loads(stored)
    doc["serial"] += 1
    doc["endpoints"]["demo"]["config_version"] = -1
    bad.write_text(json.dumps(doc))
    result = declare_cli("state", "push", str(bad), str(applied.parents[1]))
    assert result.returncode == 1
    assert f"{bad}: endpoints.demo.config_version: expected at least 0, found -1" in (result.stderr)
    assert "Nothing was pushed." in result.stderr
    assert applied.read_bytes() == stored


# -- the schema is held to what declare writes -------------------------------------------------


def _full_state() -> State:
    """A state with every field set (none left at a default that to_json would write null)."""
    model = ResolvedModel(
        uri="models:/iris@champion",
        pinned_uri="models:/iris/2",
        name="iris",
        version="2",
        alias="champion",
        run_id="r1",
        source="file:///a/iris/2",
        input_example="serving_input_example.json",
        env_hash="e1",
        signature={"inputs": "[]", "outputs": "[]"},
    )
    entity = EntitySpec(
        name="iris-2",
        model_uri="models:/iris/2",
        entity_name="iris",
        entity_version="2",
        workload_size="Medium",
        workload_type="CPU",
        scale_to_zero_enabled=True,
        environment_vars={"A": "1"},
        replicas=2,
        min_provisioned_concurrency=0,
        max_provisioned_concurrency=8,
    )
    spec = EndpointSpec(
        name="iris",
        entities=(entity,),
        routes=(Route("iris-2", 100),),
        provider="local",
        tags={"team": "ml"},
        rollout=RolloutPolicy(
            "canary", (10, 100), 30.0, Guards(0.01, 500.0, 20), deadline_seconds=600.0
        ),
        autoscaling=AutoscalePolicy(300.0, 1800.0, 60.0),
        rate_limits=(RateLimit(100, "endpoint", "minute"),),
        ai_gateway_rate_limits=(RateLimit(10, "user", "hour"),),
        extra={"description": "d"},
    )
    logs = LogSource("/l.log", "unix:///e.sock", "c1", BuildLog("/b.log", "nothing built"))
    handle = ReplicaHandle(
        "iris-iris-2-abc", "local", "iris", "iris-2", "g1", "http://h:1", {"pid": 1}, logs
    )
    record = EndpointRecord(
        name="iris",
        provider="local",
        spec=spec,
        models={"iris-2": model},
        routes=(Route("iris-2", 100),),
        serving={"iris-2": "g1"},
        split=(("iris-2", "g1", 10),),
        replicas=(ReplicaRecord(handle, 0, ready=True, retired=True, started_at=1.5),),
        config_update=UPDATE_FAILED,
        message="m",
        pending=spec,
        config_version=3,
        created_at=1.0,
        updated_at=2.0,
        scale={"iris-2": EntityScale(2, "g1", "up", 3.0, 4.0, 1, 5.0, "boom")},
        events=(ScaleEvent(6.0, "iris-2", "scale", "2 replicas"),),
    )
    return State(
        serial=7,
        lineage="l-1",
        endpoints={"iris": record},
        gateway=RecordedGateway("127.0.0.1", 8787, "gh"),
        runtime=RecordedRuntime("rh"),
    )


def test_a_state_with_every_field_set_passes_and_reads_back_the_same() -> None:
    state = _full_state()
    doc = {**state.to_json(), "serial": 7}
    check_document(doc, "s.json")
    read = load_state(doc, "s.json")
    assert read.to_json() == state.to_json()


FREE_FORM = {"extra", "data"}  # a provider's or Databricks' own JSON, kept as it is


def _paths(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> Iterator[str]:
    """Every field of `value` that `schema` does not declare, as a JSON path."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if isinstance(value, dict):
        properties = schema.get("properties")
        for key, item in value.items():
            if properties is not None:
                if key not in properties:
                    yield f"{where}.{key}"
                elif key not in FREE_FORM:
                    yield from _paths(item, properties[key], root, f"{where}.{key}")
            elif "additionalProperties" in schema:
                yield from _paths(item, schema["additionalProperties"], root, f"{where}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from _paths(item, schema["items"], root, f"{where}[{i}]")


def test_the_schema_declares_every_field_declare_writes() -> None:
    schema = dict(load_schema("state.schema.json"))
    doc = _full_state().to_json()
    assert list(_paths(doc, schema, schema, "")) == []


def test_the_schema_knows_the_values_the_code_knows() -> None:
    defs = load_schema("state.schema.json")["$defs"]
    entity = defs["entity"]["properties"]
    assert entity["workload_size"]["enum"] == list(WORKLOAD_SIZES)
    assert entity["workload_type"]["enum"] == list(WORKLOAD_TYPES)
    status = defs["endpoint"]["properties"]["status"]["properties"]
    assert status["config_update"]["enum"] == [NOT_UPDATING, IN_PROGRESS, UPDATE_FAILED]


def test_no_state_yet_is_an_empty_state_and_odd_keys_are_quoted() -> None:
    assert load_state(None, "s.json") == State()
    doc = {**_full_state().to_json()}
    doc["endpoints"] = {"a.b": {"name": "a.b", "provider": 1}}
    with pytest.raises(StateDocumentError) as err:
        load_state(doc, "s.json")
    assert 's.json: endpoints["a.b"].provider: expected a string, found 1' in str(err.value)


def test_a_replicas_log_source_of_the_wrong_type_is_located() -> None:
    doc = _full_state().to_json()
    doc["endpoints"]["iris"]["replicas"][0]["handle"]["logs"]["file"] = 7
    with pytest.raises(StateDocumentError) as raised:
        check_document(doc, "s.json")
    assert "s.json: endpoints.iris.replicas[0].handle.logs.file: expected a string" in str(
        raised.value
    )
