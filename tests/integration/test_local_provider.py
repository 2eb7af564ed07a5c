"""The local provider against real MLflow scoring servers, started from a real sqlite registry.

Every test that uses `local_provider` runs for both launchers (`providers.local.launcher`):
`fork` (with the fork server started and answering first, so replicas are really forked)
and `exec` (`mlflow models serve`). Every process here is started by the provider under test
and stopped by its recorded (pid, start time), the fork server by `stop_forkserver`; the
PID-reuse test starts its own stand-in process and kills it by PID.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from pathlib import Path

import httpx
import pytest

from declare import procs
from declare.errors import ProviderError
from declare.model import ReplicaHandle, ReplicaSpec
from declare.provider import Liveness, ProviderContext, load_provider
from providers.local import LocalProvider
from tests import provider_conformance as conformance
from tests.integration.conftest import (
    MlflowProject,
    replica_spec,
    serving_example,
    wait_for_prediction,
)


def _group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live (non-zombie) process in the process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = procs._stat_fields(int(entry.name))
        if fields is None or fields[0] in ("Z", "X") or int(fields[2]) != pgid:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        members.append((int(entry.name), cmdline))
    return members


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.fixture(params=["fork", "exec"])
def launcher(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["declare", "mlflow"])
def server(request: pytest.FixtureRequest) -> str:
    """providers.local.server: every test here runs on declare's replica server and MLflow's."""
    return str(request.param)


@pytest.fixture
def provider_context(tmp_path: Path, launcher: str, server: str) -> ProviderContext:
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    return ProviderContext(
        project="itest",
        project_dir=project_dir,
        state_dir=project_dir / "state",
        settings={"launcher": launcher, "server": server},
    )


@pytest.fixture
def local_provider(provider_context: ProviderContext, launcher: str) -> Iterator[LocalProvider]:
    provider = LocalProvider(provider_context)
    if launcher == "fork":
        assert provider.start_forkserver(wait_seconds=60), "the fork server did not answer"
    yield provider
    for handle in provider.list_owned():
        provider.stop_replica(handle, grace_seconds=2.0)
    provider.stop_forkserver()
    assert provider.forkserver.running() is None


def _wait_dead(provider: LocalProvider, handle: ReplicaHandle, timeout: float) -> str:
    status = conformance.wait_for_liveness(provider, handle, Liveness.DEAD, timeout)
    assert status.liveness is Liveness.DEAD, f"{handle.id} still alive after {timeout}s"
    return status.reason


# -- conformance -------------------------------------------------------------------------------


@pytest.fixture
def harness(
    local_provider: LocalProvider, provider_context: ProviderContext, mlflow_project: MlflowProject
) -> conformance.Harness:
    model = mlflow_project.resolve("models:/iris/1")

    def make_spec(index: int) -> ReplicaSpec:
        return replica_spec(model, model_env=mlflow_project.model_env, index=index)

    def kill(handle: ReplicaHandle) -> None:
        os.killpg(int(handle.data["pid"]), signal.SIGKILL)

    return conformance.Harness.reopening(local_provider, provider_context, make_spec, kill)


class TestConformance(conformance.Conformance):
    """The provider conformance checks, against real scoring-server processes."""


# -- real serving ------------------------------------------------------------------------------


def test_replicas_of_two_versions_answer_real_predictions(
    local_provider: LocalProvider, mlflow_project: MlflowProject
) -> None:
    v1 = mlflow_project.resolve("models:/iris/1")
    v2 = mlflow_project.resolve("models:/iris/2")
    env = mlflow_project.model_env
    body = serving_example(v1)
    started = time.monotonic()
    h1 = local_provider.start_replica(replica_spec(v1, model_env=env, entity="iris-1"))
    assert time.monotonic() - started < 2.0, "start_replica must return at once"
    answer1, _ = wait_for_prediction(h1, body)
    first_prediction = time.monotonic() - started

    # A second replica (another version) while the first serves: its own port, its own model.
    h2 = local_provider.start_replica(replica_spec(v2, model_env=env, entity="iris-2"))
    assert h1.url != h2.url
    answer2, _ = wait_for_prediction(h2, serving_example(v2))
    for answer in (answer1, answer2):
        predictions = answer["predictions"]
        assert len(predictions) == 3
        assert set(predictions) <= {0, 1, 2}

    # One request's latency against a warm replica (keep-alive connection).
    with httpx.Client(timeout=5.0) as client:
        latencies = []
        for _ in range(30):
            t0 = time.perf_counter()
            response = client.post(
                f"{h1.url}/invocations",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == 200
    median_ms = statistics.median(latencies) * 1000
    print(
        f"\n[local] start_replica -> first prediction: {first_prediction:.2f}s; "
        f"median latency of one request: {median_ms:.2f} ms"
    )
    assert median_ms < 30, "a warm local replica should answer in milliseconds (uvloop?)"


def test_a_replica_whose_model_cannot_load_dies_with_the_error_in_its_log(
    local_provider: LocalProvider, mlflow_project: MlflowProject
) -> None:
    broken = mlflow_project.resolve("models:/broken/1")
    handle = local_provider.start_replica(
        replica_spec(broken, model_env=mlflow_project.model_env, endpoint="bad", entity="b-1")
    )
    reason = _wait_dead(local_provider, handle, timeout=60)
    assert "RuntimeError: model cannot load" in reason
    assert "RuntimeError: model cannot load" in local_provider.logs(handle, tail=50)
    assert [h.id for h in local_provider.list_owned()] == [handle.id]  # drift stays visible

    local_provider.stop_replica(handle, grace_seconds=1.0)
    assert local_provider.list_owned() == []
    assert "RuntimeError: model cannot load" in local_provider.logs(handle, tail=50)


def test_stop_leaves_no_process_of_the_group_and_keeps_the_log(
    local_provider: LocalProvider,
    mlflow_project: MlflowProject,
    provider_context: ProviderContext,
    launcher: str,
) -> None:
    model = mlflow_project.resolve("models:/iris/1")
    spec = replica_spec(
        model,
        model_env=mlflow_project.model_env,
        environment_vars={"MY_SETTING": "on"},
    )
    handle = local_provider.start_replica(spec)
    wait_for_prediction(handle, serving_example(model))
    pid = int(handle.data["pid"])

    members = _group_members(pid)
    server = local_provider.settings.server
    if launcher == "exec" and server == "mlflow":
        assert len(members) >= 2, members  # the MLflow launcher and its uvicorn child
    else:
        assert [p for p, _ in members] == [pid], members  # the server in the process itself
    if launcher == "fork":
        assert "forked by the fork server" in local_provider.logs(handle, tail=200)
    assert os.getpgid(pid) == pid
    serving = "uvicorn" if server == "mlflow" else "declare.serve"
    assert any(serving in cmd for _, cmd in members), members
    env = _environ(pid)
    assert env["MY_SETTING"] == "on"
    assert env["MLFLOW_TRACKING_URI"] == mlflow_project.tracking_uri
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)

    records = provider_context.state_dir / "local" / "replicas"
    record = json.loads((records / f"{handle.id}.json").read_text())
    assert record["process"] == {"pid": pid, "start_time": handle.data["start_time"]}
    assert record["labels"] == spec.labels
    assert record["model"]["pinned_uri"] == "models:/iris/1"
    assert "MY_SETTING" not in json.dumps(record)  # user variables (secrets) are not recorded

    local_provider.stop_replica(handle, grace_seconds=5.0)
    assert _group_members(pid) == []
    assert not procs.port_open("127.0.0.1", int(handle.data["port"]))
    assert local_provider.status(handle).liveness is Liveness.DEAD
    assert list(records.iterdir()) == []  # record removed, no temp file left behind
    logs = provider_context.state_dir / "local" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        f"{handle.id}.stopped.json",  # whose kept log it is: project, endpoint, entity, time
        f"{handle.id}.stopped.log",
    ]
    (kept,) = local_provider.stopped_logs(spec.endpoint, spec.entity, tail=200)
    assert kept.replica_id == handle.id
    started = "Uvicorn running" if server == "mlflow" else "declare.serve: serving"
    assert started in local_provider.logs(handle, tail=200)


def test_a_reused_pid_is_dead_and_is_never_signalled(
    local_provider: LocalProvider, provider_context: ProviderContext, tmp_path: Path
) -> None:
    # Another program now holds the PID a replica once had: same pid, other start time.
    other = procs.start_detached(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "other.log", os.environ
    )
    try:
        records = provider_context.state_dir / "local" / "replicas"
        records.mkdir(parents=True)
        record = {
            "format": 1,
            "id": "iris-iris-1-abc123",
            "provider": "local",
            "labels": {
                "declare.project": "itest",
                "declare.endpoint": "iris",
                "declare.entity": "iris-1",
                "declare.generation": "g1",
                "declare.index": "0",
            },
            "process": {"pid": other.pid, "start_time": other.start_time - 1},
            "host": "127.0.0.1",
            "port": 1,
            "log": str(provider_context.state_dir / "local" / "logs" / "iris-iris-1-abc123.log"),
            "model": {"pinned_uri": "models:/iris/1", "source": "/gone"},
        }
        (records / "iris-iris-1-abc123.json").write_text(json.dumps(record))

        [handle] = LocalProvider(provider_context).list_owned()
        status = local_provider.status(handle)
        assert status.liveness is Liveness.DEAD
        assert "belongs to another process" in status.reason

        local_provider.stop_replica(handle, grace_seconds=0.5)
        time.sleep(0.2)
        assert procs.is_running(other), "stop_replica signalled a process that is not a replica"
        assert local_provider.list_owned() == []
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        procs.stop(other, grace_seconds=1.0)


# -- refusals and settings ---------------------------------------------------------------------


def test_gpu_workloads_are_refused_and_nothing_starts(
    local_provider: LocalProvider, mlflow_project: MlflowProject, provider_context: ProviderContext
) -> None:
    model = mlflow_project.resolve("models:/iris/1")
    spec = replica_spec(model, model_env=mlflow_project.model_env, workload_type="GPU_SMALL")
    with pytest.raises(ProviderError, match=r"GPU_SMALL.*docker"):
        local_provider.start_replica(spec)
    assert local_provider.list_owned() == []
    assert not (provider_context.state_dir / "local" / "logs").exists()


def test_missing_model_files_are_a_provider_error(
    local_provider: LocalProvider, mlflow_project: MlflowProject, tmp_path: Path
) -> None:
    model = mlflow_project.resolve("models:/iris/1")
    gone = tmp_path / "deleted-model"
    spec = replica_spec(
        type(model)(uri=model.uri, pinned_uri=model.pinned_uri, source=str(gone)),
        model_env=mlflow_project.model_env,
    )
    with pytest.raises(ProviderError, match=re.escape(str(gone))):
        local_provider.start_replica(spec)
    assert local_provider.list_owned() == []


def test_an_unreadable_record_is_named_in_the_error(
    local_provider: LocalProvider, provider_context: ProviderContext
) -> None:
    records = provider_context.state_dir / "local" / "replicas"
    records.mkdir(parents=True)
    (records / "junk.json").write_text("{not json")
    with pytest.raises(ProviderError, match=r"junk\.json"):
        local_provider.list_owned()
    (records / "junk.json").unlink()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"host": "10.0.0.1"}, "not an IPv4 loopback address"),
        ({"host": "0.0.0.0"}, "not an IPv4 loopback address"),
        ({"host": "example.com"}, "not an IPv4 loopback address"),
        ({"workers": 0}, "workers: must be a whole number"),
        ({"workers": "2"}, "workers: must be a whole number"),
        ({"replicas": 3}, "unknown setting 'replicas'"),
        ({"launcher": "spawn"}, "launcher: must be one of fork, exec"),
    ],
)
def test_bad_settings_are_config_errors(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    conformance.check_bad_settings(LocalProvider, tmp_path, settings, message)


def test_loopback_settings_are_accepted(tmp_path: Path) -> None:
    ctx = ProviderContext("p", tmp_path, tmp_path, settings={"host": "localhost", "workers": 2})
    provider = LocalProvider(ctx)
    assert (provider.settings.host, provider.settings.workers) == ("127.0.0.1", 2)
    assert provider.settings.launcher == "fork"
    ctx = ProviderContext("p", tmp_path, tmp_path, settings={"launcher": "exec"})
    assert LocalProvider(ctx).settings.launcher == "exec"
    other = ProviderContext("p", tmp_path, tmp_path, settings={"host": "127.0.0.2"})
    assert LocalProvider(other).settings.host == "127.0.0.2"


def test_check_passes_on_this_machine_and_the_entry_point_is_local(
    provider_context: ProviderContext,
) -> None:
    provider = load_provider("local", provider_context)
    assert isinstance(provider, LocalProvider)
    provider.check()


def test_check_names_what_is_missing(
    provider_context: ProviderContext, monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    real_find_spec = importlib.util.find_spec
    needed = "uvicorn" if server == "mlflow" else "httptools"  # the server's HTTP layer

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == needed else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ProviderError, match=rf"missing the Python package '{needed}'"):
        LocalProvider(provider_context).check()
