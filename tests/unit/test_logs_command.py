"""`declare logs` without processes: the arguments it takes, the local provider's kept logs
of stopped replicas (found by their sidecar, not by parsing ids), reading a log on as it
grows, and `--follow` picking up a replica that starts later."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from declare import procs
from declare.commands.logs import Follower, show, split_positionals, stopped_header
from declare.errors import ConfigError
from declare.model import ReplicaHandle
from declare.project import open_project
from declare.provider import LogFollowing, ProviderContext, StoppedLog, StoppedLogs
from providers.docker.containers import Containers
from providers.local import LocalProvider


def _handle(replica_id: str, endpoint: str, entity: str, log: Path) -> ReplicaHandle:
    labels = {"declare.project": "proj", "declare.endpoint": endpoint, "declare.entity": entity}
    return ReplicaHandle(
        id=replica_id,
        provider="local",
        endpoint=endpoint,
        entity=entity,
        generation="g1",
        url="http://127.0.0.1:1",
        data={"pid": 1, "start_time": 1, "log": str(log), "labels": labels},
    )


@pytest.fixture
def local(tmp_path: Path) -> LocalProvider:
    return LocalProvider(ProviderContext("proj", tmp_path, tmp_path / "state"))


def _stop(provider: LocalProvider, handle: ReplicaHandle, text: str) -> None:
    log = Path(str(handle.data["log"]))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    provider.records.forget(handle)


def test_the_project_folder_is_the_last_argument(tmp_path: Path) -> None:
    assert split_positionals(None, None) == (None, Path("."))
    assert split_positionals("iris-1", None) == ("iris-1", Path("."))
    assert split_positionals(str(tmp_path), None) == (None, tmp_path)
    assert split_positionals("iris-1", tmp_path) == ("iris-1", tmp_path)


def test_stopped_logs_are_found_by_their_record_not_their_id(local: LocalProvider) -> None:
    logs = local.logs_dir
    # "iris-x" and "iris" with entity "x-1" make ids that begin alike.
    _stop(local, _handle("iris-x-1-aaaaaa", "iris", "x-1", logs / "iris-x-1-aaaaaa.log"), "a\n")
    _stop(local, _handle("iris-x-1-bbbbbb", "iris-x", "1", logs / "iris-x-1-bbbbbb.log"), "b\n")
    _stop(local, _handle("iris-x-1-cccccc", "iris", "x-1", logs / "iris-x-1-cccccc.log"), "c\n")
    assert isinstance(local, StoppedLogs)
    found = local.stopped_logs("iris", None, tail=5)
    assert [(log.replica_id, log.text) for log in found] == [
        ("iris-x-1-cccccc", "c"),
        ("iris-x-1-aaaaaa", "a"),
    ]
    assert [log.replica_id for log in local.stopped_logs("iris-x", "1", 5)] == ["iris-x-1-bbbbbb"]
    assert local.stopped_logs("iris", "other", 5) == []
    assert found[0].stopped_at is not None
    assert "stopped at " in stopped_header(found[0])


def test_a_kept_log_without_its_record_is_not_claimed(local: LocalProvider) -> None:
    local.logs_dir.mkdir(parents=True)
    (local.logs_dir / "iris-iris-1-dddddd.stopped.log").write_text("old\n")
    assert local.stopped_logs("iris", None, 5) == []


def test_log_since_gives_whole_lines_and_where_to_go_on(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    assert procs.log_since(path, 0) == ("", 0)
    path.write_text("one\ntw")
    assert procs.log_since(path, 0) == ("one\n", 4)
    assert procs.log_since(path, 4) == ("", 4)
    with open(path, "a") as f:
        f.write("o\n")
    assert procs.log_since(path, 4) == ("two\n", 8)
    path.write_text("new\n")  # replaced by a shorter file: read it again from the start
    assert procs.log_since(path, 8) == ("new\n", 4)
    assert procs.log_tail(path, 0) == ""


class _Growing:
    """A provider whose logs are strings that the test appends to."""

    name = "growing"

    def __init__(self) -> None:
        self.text: dict[str, str] = {}

    def log_size(self, handle: ReplicaHandle) -> int:
        return len(self.text.get(handle.id, ""))

    def log_since(self, handle: ReplicaHandle, offset: int) -> tuple[str, int]:
        text = self.text.get(handle.id, "")
        return text[offset:], len(text)


def test_follow_prints_new_lines_and_picks_up_a_replacement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = _Growing()
    assert isinstance(provider, LogFollowing)
    old = _handle("iris-iris-1-aaaaaa", "iris", "iris-1", tmp_path / "a.log")
    new = _handle("iris-iris-2-bbbbbb", "iris", "iris-2", tmp_path / "b.log")
    running = [old]
    provider.text[old.id] = "shown already\n"
    follower = Follower(running=lambda: running, provider_of=lambda h: provider)
    follower.start([old])
    follower.poll()
    assert capsys.readouterr().out == ""
    provider.text[old.id] += "later\n"
    provider.text[new.id] = "declare.serve: serving\n"
    running.append(new)
    follower.poll()
    out = capsys.readouterr().out
    assert out == "later\n==> iris-iris-2-bbbbbb (iris-2), started <==\ndeclare.serve: serving\n"
    assert "shown already" not in out

    # The old replica stops: its last lines once, under its name, then only the new one's.
    provider.text[old.id] += "stopping\n"
    provider.text[new.id] += "POST /invocations\n"
    running.remove(old)
    follower.poll()
    assert capsys.readouterr().out == (
        "==> iris-iris-1-aaaaaa (iris-1) (stopped) <==\nstopping\n"
        "==> iris-iris-2-bbbbbb (iris-2) <==\nPOST /invocations\n"
    )
    provider.text[old.id] += "never shown\n"
    follower.poll()
    assert capsys.readouterr().out == ""


def test_stopped_log_header_without_a_time() -> None:
    log = StoppedLog("iris-iris-1-aaaaaa", "iris-1", None, "")
    assert stopped_header(log) == "==> iris-iris-1-aaaaaa (iris-1), stopped <=="


def test_an_endpoint_the_state_lacks_shows_its_kept_logs_or_lists_the_known(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = open_project(tmp_path)  # no declare.yaml, no state yet: the local provider
    local = project.provider("local")
    assert isinstance(local, LocalProvider)
    labels = {"declare.project": project.name}
    handle = _handle("iris-iris-1-aaaaaa", "iris", "iris-1", local.logs_dir / "x.log")
    handle = replace(handle, data={**handle.data, "labels": labels})
    _stop(local, handle, "RuntimeError: model cannot load\n")
    assert show(project, "iris", None, 10) == []
    out = capsys.readouterr().out
    assert "==> iris-iris-1-aaaaaa (iris-1), stopped at " in out
    assert "RuntimeError: model cannot load" in out
    with pytest.raises(ConfigError, match=r"no endpoint 'nope' .*endpoints: none"):
        show(project, "nope", None, 10)


class _Container:
    def logs(self) -> bytes:
        return b"mlflow started\nRuntimeError: model cannot load\n"


def test_the_docker_provider_keeps_a_removed_containers_log_by_endpoint(tmp_path: Path) -> None:
    containers = Containers(None, "proj", "127.0.0.1", tmp_path / "logs", tmp_path / "builds")
    handle = _handle("iris-iris-1-aaaaaa", "iris", "iris-1", tmp_path / "unused.log")
    containers._save_log(handle, _Container())
    (kept,) = containers.stopped_logs("iris", "iris-1", tail=1)
    assert (kept.replica_id, kept.text) == (handle.id, "RuntimeError: model cannot load")
    assert containers.stopped_logs("iris-x", None, tail=1) == []
