"""The local provider's fork server: forked replicas answer exactly as `mlflow models serve` ones.

- A differential test: one replica forked, one started by exec, of the same model; the same
  requests to both (every input format MLflow takes, CSV, bad bodies, a schema mismatch, the
  probe and version routes) get the same status, content type and body, and the two
  processes have the same environment.
- The forked replica is its own process group (pgid == pid), stops with `stop_replica`, and
  is reaped by the fork server (no zombie); the fork server runs no thread but its main one.
- A killed fork server is restarted on the next start (that replica is started by exec and
  its log says why); a replica whose environment differs in a variable read at start is
  started by exec too; the socket is 0600 and refuses other users; the fork server exits
  when its state folder is removed, and when idle.

Every process here is started by the provider (or, for the idle test, by the test with
`procs.start_detached`) and stopped by its recorded identity; test traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from declare import procs
from declare.model import ReplicaHandle, ResolvedModel
from declare.provider import ProviderContext
from providers.local import LocalProvider
from providers.local.forkclient import server_env
from providers.local.forkproto import ForkServerPaths, socket_address
from tests.integration.conftest import (
    MlflowProject,
    replica_spec,
    serving_example,
    wait_for_prediction,
)
from tests.integration.test_local_provider import _environ, _group_members


def _provider(folder: Path, launcher: str, server: str = "declare") -> LocalProvider:
    project_dir = folder / "project"
    project_dir.mkdir(parents=True)
    context = ProviderContext(
        project="itest",
        project_dir=project_dir,
        state_dir=project_dir / "state",
        settings={"launcher": launcher, "server": server},
    )
    return LocalProvider(context)


def _cleanup(provider: LocalProvider) -> None:
    for handle in provider.list_owned():
        provider.stop_replica(handle, grace_seconds=2.0)
    provider.stop_forkserver()


@pytest.fixture(autouse=True)
def _hash_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow prints sets of strings in some messages, whose order depends on the hash seed:
    # random per process, so two `mlflow models serve` replicas differ there too. One seed for
    # the fork server (so its replicas) and the exec replicas makes the answers comparable.
    monkeypatch.setenv("PYTHONHASHSEED", "0")


@pytest.fixture
def fork_provider(tmp_path: Path) -> Iterator[LocalProvider]:
    provider = _provider(tmp_path / "fork", "fork")
    assert provider.start_forkserver(wait_seconds=60), "the fork server did not answer"
    yield provider
    _cleanup(provider)


def _forked(provider: LocalProvider, handle: ReplicaHandle) -> bool:
    return "forked by the fork server" in provider.logs(handle, tail=500)


# -- the same answers --------------------------------------------------------------------------


def _requests(model: ResolvedModel) -> list[tuple[str, str, bytes | None, str | None]]:
    """(method, path, body, content type): every input format, bad bodies, the other routes."""
    example = json.loads(serving_example(model))["dataframe_split"]
    columns, rows = example["columns"], example["data"]
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    as_json = "application/json"

    def body(value: Any) -> bytes:
        return json.dumps(value).encode()

    csv = ",".join(columns) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    return [
        ("POST", "/invocations", serving_example(model), as_json),
        ("POST", "/invocations", body({"dataframe_records": records}), as_json),
        ("POST", "/invocations", body({"instances": records}), as_json),
        ("POST", "/invocations", body({"instances": rows}), as_json),
        ("POST", "/invocations", body({"inputs": rows}), as_json),
        ("POST", "/invocations", body({"inputs": {c: [r[i] for r in rows] for i, c in
                                                  enumerate(columns)}}), as_json),
        ("POST", "/invocations", csv.encode(), "text/csv"),
        ("POST", "/invocations", b"{not json", as_json),
        ("POST", "/invocations", body({"nonsense": [1, 2]}), as_json),
        ("POST", "/invocations", body({"dataframe_split": {"columns": columns[:3],
                                                           "data": [r[:3] for r in rows]}}),
         as_json),
        ("POST", "/invocations", body({"dataframe_records": [{columns[0]: "x"}]}), as_json),
        ("POST", "/invocations", b"a,b\n1,2\n", "text/plain"),
        ("POST", "/invocations", serving_example(model), None),
        ("GET", "/invocations", None, None),
        ("GET", "/ping", None, None),
        ("GET", "/health", None, None),
        ("GET", "/version", None, None),
        ("GET", "/no-such-route", None, None),
    ]  # fmt: skip


def _answer(url: str, request: tuple[Any, ...]) -> dict[str, Any]:
    """The answer on a new connection (a 500 closes a kept-alive one)."""
    method, path, content, content_type = request
    headers = {"Content-Type": content_type} if content_type else {}
    with httpx.Client(timeout=10.0) as client:
        response = client.request(method, url + path, content=content, headers=headers)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return {
        "status": response.status_code,
        "content-type": response.headers.get("content-type"),
        "body": body,
    }


@pytest.mark.parametrize("server", ["declare", "mlflow"])
def test_a_forked_replica_answers_exactly_as_mlflow_models_serve(
    tmp_path: Path, mlflow_project: MlflowProject, server: str
) -> None:
    """A forked replica of either server, an exec'd one of the same server, and an exec'd
    `mlflow models serve` (the reference) give the same answers; the forked and exec'd
    replicas of one server hold the same environment."""
    fork_provider = _provider(tmp_path / "fork", "fork", server)
    exec_provider = _provider(tmp_path / "exec", "exec", server)
    reference = _provider(tmp_path / "mlflow", "exec", "mlflow")
    try:
        assert fork_provider.start_forkserver(wait_seconds=60), "the fork server did not answer"
        _same_answers_and_environment(fork_provider, exec_provider, reference, mlflow_project)
    finally:
        for provider in (fork_provider, exec_provider, reference):
            _cleanup(provider)


def _same_answers_and_environment(
    fork_provider: LocalProvider,
    exec_provider: LocalProvider,
    reference: LocalProvider,
    mlflow_project: MlflowProject,
) -> None:
    model = mlflow_project.resolve("models:/iris/1")
    env = mlflow_project.model_env
    extra = {"MY_SETTING": "on"}
    spec = replica_spec(model, model_env=env, environment_vars=extra)
    forked = fork_provider.start_replica(spec)
    execed = exec_provider.start_replica(spec)
    mlflows = reference.start_replica(spec)
    for handle in (forked, execed, mlflows):
        wait_for_prediction(handle, serving_example(model))
    assert _forked(fork_provider, forked)
    assert not _forked(exec_provider, execed)

    requests = _requests(model)
    reference_answers = [_answer(mlflows.url, r) for r in requests]
    for handle in (forked, execed):
        answers = [_answer(handle.url, r) for r in requests]
        for request, answer, expected in zip(requests, answers, reference_answers, strict=True):
            assert answer == expected, f"{request[:2]} {request[2]!r:.80}"
    statuses = {a["status"] for a in reference_answers}
    assert {200, 400, 404, 405, 415, 500} <= statuses, statuses  # the bad ones were bad ones

    # The same environment in both serving processes (MLflow's exec'd one is uvicorn, the
    # child of the MLflow launcher; declare's is the process itself).
    exec_pid = int(execed.data["pid"])
    serving_pid = exec_pid
    if exec_provider.settings.server == "mlflow":
        serving_pid = next(p for p, cmd in _group_members(exec_pid) if "bin/uvicorn" in cmd)
    fork_env = _environ(int(forked.data["pid"]))
    exec_env = _environ(serving_pid)
    assert fork_env.pop("DECLARE_REPLICA_ID") == forked.id
    assert exec_env.pop("DECLARE_REPLICA_ID") == execed.id
    # MLflow draws its telemetry id per process at import: each has its own (a declare.serve
    # started by exec sets it after its start, where /proc/PID/environ does not show it).
    fork_id = fork_env.pop("_MLFLOW_TELEMETRY_SESSION_ID")
    assert fork_id != exec_env.pop("_MLFLOW_TELEMETRY_SESSION_ID", None)
    fork_pwd, exec_pwd = fork_env.pop("PWD", None), exec_env.pop("PWD", None)
    if exec_provider.settings.server == "mlflow":  # MLflow runs uvicorn through bash
        assert fork_pwd == str(fork_provider.context.project_dir)
        assert exec_pwd == str(exec_provider.context.project_dir)
    assert fork_env == exec_env


# -- the forked process ------------------------------------------------------------------------


def test_a_forked_replica_is_its_own_group_stops_and_is_reaped(
    fork_provider: LocalProvider, mlflow_project: MlflowProject
) -> None:
    model = mlflow_project.resolve("models:/iris/1")
    handle = fork_provider.start_replica(replica_spec(model, model_env=mlflow_project.model_env))
    wait_for_prediction(handle, serving_example(model))
    pid = int(handle.data["pid"])
    server = fork_provider.forkserver.running()
    assert server is not None
    assert _forked(fork_provider, handle)
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid
    assert procs._stat_fields(pid) is not None
    assert int(procs._stat_fields(pid)[1]) == server.pid  # type: ignore[index]  # ppid
    # Only the replica's own descriptors: stdio and the sockets it serves on.
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert fds[0] == os.devnull and fds[1] == fds[2] == handle.data["log"]
    assert not any(".sock" in target or ".lock" in target for target in fds.values()), fds
    status = fork_provider.forkserver.status(timeout=30)  # it may be importing what it learns
    assert status is not None and status["threads"] == ["MainThread"]
    assert pid in status["children"]

    fork_provider.stop_replica(handle, grace_seconds=5.0)
    assert _group_members(pid) == []
    # The fork server reaps on its own loop, a moment after the group died: no zombie stays.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the fork server left a zombie"
    assert procs.is_running(server), "stopping a replica must not stop the fork server"
    learned = json.loads(fork_provider.forkserver.paths.learned.read_text())
    assert "mlflow.sklearn" in learned["modules"]  # the model's loader module, learned


def test_a_killed_replica_is_reaped_and_dead(
    fork_provider: LocalProvider, mlflow_project: MlflowProject
) -> None:
    model = mlflow_project.resolve("models:/iris/1")
    handle = fork_provider.start_replica(replica_spec(model, model_env=mlflow_project.model_env))
    pid = int(handle.data["pid"])
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the fork server left a zombie"
    assert fork_provider.status(handle).liveness.value == "dead"


# -- the fork server's life --------------------------------------------------------------------


def test_a_killed_fork_server_is_restarted_on_the_next_start(
    fork_provider: LocalProvider, mlflow_project: MlflowProject
) -> None:
    model = mlflow_project.resolve("models:/iris/1")
    env = mlflow_project.model_env
    old = fork_provider.forkserver.running()
    assert old is not None
    os.kill(old.pid, signal.SIGKILL)
    while procs.is_running(old):
        time.sleep(0.05)

    # the next start starts a new fork server, waits for it and forks
    first = fork_provider.start_replica(replica_spec(model, model_env=env, index=0))
    new = fork_provider.forkserver.running()
    assert new is not None and new != old
    assert _forked(fork_provider, first), fork_provider.logs(first, tail=20)
    wait_for_prediction(first, serving_example(model))

    second = fork_provider.start_replica(replica_spec(model, model_env=env, index=1))
    assert _forked(fork_provider, second), fork_provider.logs(second, tail=20)
    wait_for_prediction(second, serving_example(model))


def test_a_replica_with_other_startup_variables_is_started_by_exec(
    fork_provider: LocalProvider, mlflow_project: MlflowProject
) -> None:
    model = mlflow_project.resolve("models:/iris/1")
    spec = replica_spec(
        model, model_env=mlflow_project.model_env, environment_vars={"OMP_NUM_THREADS": "1"}
    )
    handle = fork_provider.start_replica(spec)
    log = fork_provider.logs(handle, tail=50)
    assert "variables read at import differ from the fork server's: ['OMP_NUM_THREADS']" in log
    assert "started by `python -m declare.serve` instead" in log
    wait_for_prediction(handle, serving_example(model))
    assert _environ(int(handle.data["pid"]))["OMP_NUM_THREADS"] == "1"
    assert fork_provider.forkserver.ping(), "a replica's own variables do not replace the server"


def test_the_socket_is_0600_and_refuses_other_users(fork_provider: LocalProvider) -> None:
    path = fork_provider.forkserver.paths.socket
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if os.getuid() != 0:
        pytest.skip("needs root to try as another user")
    # As root, open the socket's folder, become `nobody`, then connect through that folder
    # (so that only the socket's own mode decides).
    probe = (
        "import os, socket, sys\n"
        "fd = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY | os.O_DIRECTORY)\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(f'/proc/self/fd/{fd}/' + os.path.basename(sys.argv[1]))\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.strip() == "refused", result.stdout + result.stderr


def test_the_fork_server_exits_when_its_state_folder_is_removed(tmp_path: Path) -> None:
    provider = _provider(tmp_path, "fork")
    try:
        assert provider.start_forkserver(wait_seconds=60)
        server = provider.forkserver.running()
        assert server is not None
        shutil.rmtree(provider.context.state_dir)
        deadline = time.monotonic() + 10
        while procs.is_running(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not procs.is_running(server)
    finally:
        provider.stop_forkserver()


def test_the_fork_server_exits_when_idle(tmp_path: Path) -> None:
    paths = ForkServerPaths.of(tmp_path / "local")
    paths.folder.mkdir(parents=True)
    argv = [sys.executable, "-m", "providers.local.forkserver", str(paths.socket), "1"]
    server = procs.start_detached(argv, paths.log, os.environ, cwd=Path.cwd())
    try:
        deadline = time.monotonic() + 60
        while procs.is_running(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not procs.is_running(server)
        assert "exiting: idle for" in paths.log.read_text()
        assert not paths.socket.exists()
    finally:
        procs.stop(server, grace_seconds=1.0)


def test_a_fork_request_from_a_closed_connection_leaves_no_replica(
    fork_provider: LocalProvider, mlflow_project: MlflowProject, tmp_path: Path
) -> None:
    # A provider that gives up before the answer never records the child: it must not live.
    model = mlflow_project.resolve("models:/iris/1")
    message = {
        "op": "fork", "replica_id": "orphan", "source": model.source, "host": "127.0.0.1",
        "port": procs.free_port(), "workers": 1, "env": server_env(),
        "replica_keys": [], "log": str(tmp_path / "orphan.log"), "cwd": str(tmp_path),
    }  # fmt: skip
    paths = fork_provider.forkserver.paths
    with socket.socket(socket.AF_UNIX) as sock, socket_address(paths.socket) as address:
        sock.connect(address)
        sock.sendall(json.dumps(message).encode() + b"\n")
        answer = json.loads(sock.makefile().readline())
    assert answer["ok"], answer
    deadline = time.monotonic() + 10
    while Path(f"/proc/{answer['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{answer['pid']}").exists()
    assert fork_provider.forkserver.ping()


_KILLED_WHILE_RECORDING = """
import json, os, signal, sys
from pathlib import Path
from declare.model import ReplicaSpec
from declare.provider import ProviderContext
from providers.local import LocalProvider
project_dir, state_dir, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
context = ProviderContext("itest", Path(project_dir), Path(state_dir), {"launcher": "fork"})
provider = LocalProvider(context)
provider.records.write = lambda record: os.kill(os.getpid(), signal.SIGKILL)
provider.start_replica(ReplicaSpec.from_json(spec))
"""


def test_a_provider_killed_while_it_records_a_fork_leaves_no_replica(
    fork_provider: LocalProvider, mlflow_project: MlflowProject
) -> None:
    """The record is written before the fork server is told the child was taken on: a
    provider SIGKILLed while it records a fork never acknowledges it, and the fork server
    kills the child. (Recorded after the acknowledgement, a replica outlived a runtime
    SIGKILLed while it scaled up, with no record, so nothing ever stopped it.)"""
    model = mlflow_project.resolve("models:/iris/1")
    spec = replica_spec(model, model_env=mlflow_project.model_env)
    context = fork_provider.context
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_WHILE_RECORDING, str(context.project_dir),
         str(context.state_dir), json.dumps(spec.to_json())],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    deadline = time.monotonic() + 15
    children: list[int] = [-1]
    while children and time.monotonic() < deadline:
        status = fork_provider.forkserver.status(timeout=30)
        assert status is not None
        children = list(status["children"])
        time.sleep(0.1)
    assert children == [], "a forked replica outlived the provider that did not record it"
    assert fork_provider.list_owned() == []
