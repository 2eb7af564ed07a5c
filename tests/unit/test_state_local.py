"""The local file state backend: the conformance suite, then what only a file backend has
(backup copy, atomic writes under SIGKILL, corrupt files, file modes, lock files on disk)."""

from __future__ import annotations

import errno
import functools
import json
import multiprocessing
import os
import signal
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from declare.errors import ConfigError, StateError, StateLockedError
from declare.state import LocalStateBackend
from declare.state.local import GUARD_FILE, LOCK_FILE
from tests.state_conformance import CHECKS, CHILD_TIMEOUT, BackendFactory, check_id

# The crash tests fork (fast; this process holds no lock or open state file when it does).
_fork = multiprocessing.get_context("fork")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "project" / "state"


@pytest.fixture
def factory(state_dir: Path) -> BackendFactory:
    return functools.partial(LocalStateBackend, state_dir)


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
def test_conformance(check: Callable[[BackendFactory], None], factory: BackendFactory) -> None:
    check(factory)


def test_state_file_is_json_in_the_state_dir(state_dir: Path) -> None:
    backend = LocalStateBackend(state_dir)
    assert backend.read() is None
    assert not state_dir.exists()  # reading creates nothing
    stored = backend.write({"endpoints": {}})
    assert json.loads((state_dir / "declare.tfstate.json").read_text()) == stored


def test_backup_holds_the_state_before_the_last_write(state_dir: Path) -> None:
    backend = LocalStateBackend(state_dir)
    first = backend.write({"n": 1})
    assert not backend.backup_path.exists()
    second = backend.write({**first, "n": 2})
    assert json.loads(backend.backup_path.read_text()) == first
    backend.write({**second, "n": 3})
    assert json.loads(backend.backup_path.read_text()) == second


@pytest.mark.parametrize(
    ("code", "at"),
    [
        (errno.ENOSPC, "write"),  # the disk filled while writing the temp file
        (errno.EIO, "fsync"),
        (errno.EACCES, "open"),  # the folder became read-only
        (errno.ENOSPC, "replace"),
    ],
)
def test_a_failed_write_leaves_the_last_good_state_and_no_temp_file(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, code: int, at: str
) -> None:
    backend = LocalStateBackend(state_dir)
    first = backend.write({"n": 1})
    good = backend.path.read_bytes()
    opened = os.open

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code))

    if at == "replace":
        monkeypatch.setattr(os, "replace", failing)
    else:  # from the moment the temp file is opened (its open, or a write or fsync of it)

        def open_temp(path: Any, *args: Any, **kwargs: Any) -> int:
            if ".tmp-" in str(path):
                if at == "open":
                    failing()
                monkeypatch.setattr(os, at, failing)
            return opened(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_temp)
    with pytest.raises(StateError) as info:
        backend.write({**first, "n": 2})
    monkeypatch.undo()
    assert str(info.value) == (
        f"cannot write the state file {backend.path}: {os.strerror(code)}; it still holds "
        "the state before this write"
    )
    assert backend.path.read_bytes() == good
    assert sorted(p.name for p in state_dir.iterdir() if ".tmp-" in p.name) == []
    assert backend.write({**first, "n": 2})["serial"] == 2  # once it is fixed, writes go on


def test_files_are_private_whatever_the_umask(state_dir: Path) -> None:
    backend = LocalStateBackend(state_dir)
    old = os.umask(0)
    try:
        doc = backend.write({"n": 1})
        backend.write(doc)
        info = backend.lock("apply", 0)
        for path in (backend.path, backend.backup_path, backend.lock_path, backend.guard_path):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        backend.unlock(info.id)
    finally:
        os.umask(old)


def test_corrupt_state_names_the_file_and_the_backup(state_dir: Path) -> None:
    backend = LocalStateBackend(state_dir)
    first = backend.write({"n": 1})
    backend.write({**first, "n": 2})
    backend.path.write_text('{"format_version": 1, "serial": 2, "lin')  # truncated
    for attempt in (backend.read, lambda: backend.write({**first, "serial": 2})):
        with pytest.raises(StateError) as err:
            attempt()
        assert str(backend.path) in str(err.value)
        assert str(backend.backup_path) in str(err.value)
    assert json.loads(backend.backup_path.read_text()) == first  # the backup was left alone


def test_corrupt_state_without_backup_says_so(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / "declare.tfstate.json").write_text('["not", "a", "state"]')
    with pytest.raises(StateError) as err:
        LocalStateBackend(state_dir).read()
    assert "declare.tfstate.json" in str(err.value) and "no backup" in str(err.value)


def test_state_of_a_newer_format_is_refused(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    doc = {"format_version": 2, "serial": 3, "lineage": "x"}
    (state_dir / "declare.tfstate.json").write_text(json.dumps(doc))
    with pytest.raises(StateError) as err:
        LocalStateBackend(state_dir).read()
    assert "newer declare" in str(err.value)


def test_bad_lock_arguments_create_nothing(state_dir: Path) -> None:
    with pytest.raises(ConfigError):
        LocalStateBackend(state_dir).lock("apply", float("nan"))
    assert not state_dir.exists()  # the arguments are checked before the folder is made


def test_unlock_leaves_no_lock_files(state_dir: Path) -> None:
    backend = LocalStateBackend(state_dir)
    backend.write({})
    with backend.locked("apply", 0):
        assert {LOCK_FILE, GUARD_FILE} <= set(os.listdir(state_dir))
    assert sorted(os.listdir(state_dir)) == ["declare.tfstate.json"]


def test_locked_message_names_the_lock_file(state_dir: Path) -> None:
    holder = LocalStateBackend(state_dir)
    with holder.locked("apply", 0), pytest.raises(StateLockedError) as err:
        # A second instance in this process is a second open file: flock keeps it out too.
        LocalStateBackend(state_dir).lock("plan", 0)
    assert str(holder.lock_path) in str(err.value)


def test_unreadable_lock_record_of_a_dead_run_is_taken_over(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / LOCK_FILE).write_text("")  # a run killed between creating and filling it
    backend = LocalStateBackend(state_dir)
    info = backend.lock("apply", 0)
    assert backend.lock_info() == info and info.replaced is None
    backend.unlock(info.id)


def test_sigkill_at_any_point_of_a_write_leaves_a_readable_state(state_dir: Path) -> None:
    backend = LocalStateBackend(state_dir)
    before = backend.write({"n": 1})
    for kill_at in range(1, 100):
        if _run_killed_at(state_dir, "write", kill_at):
            break
        after = backend.read()  # the old or the new state, never a broken one
        assert after is not None
        assert after["n"] == after["serial"] and after["serial"] in (
            before["serial"],
            before["serial"] + 1,
        ), (kill_at, after)
        if backend.backup_path.exists():
            json.loads(backend.backup_path.read_text())
        before = backend.write({**after, "n": after["serial"] + 1})  # and we carry on
    else:
        pytest.fail("the write never finished")
    assert kill_at > 5  # the write really was cut at several points
    assert [p for p in os.listdir(state_dir) if ".tmp-" in p] == []  # leftovers cleaned


def test_sigkill_at_any_point_of_taking_the_lock_leaves_it_takeable(state_dir: Path) -> None:
    backend = LocalStateBackend(state_dir)
    for kill_at in range(1, 100):
        finished = _run_killed_at(state_dir, "lock", kill_at)
        info = backend.lock("apply", 0)  # the dead run's lock, if any, is taken over
        backend.unlock(info.id)
        assert sorted(os.listdir(state_dir)) == []
        if finished:
            break
    else:
        pytest.fail("taking the lock never finished")
    assert kill_at > 4


def _run_killed_at(state_dir: Path, action: str, kill_at: int) -> bool:
    """Run `action` in a child that SIGKILLs itself at its `kill_at`-th file system call.

    True when the action finished before that call.
    """
    ours, theirs = _fork.Pipe()
    process = _fork.Process(target=_killed_at, args=(state_dir, action, kill_at, theirs))
    process.start()
    theirs.close()
    try:
        process.join(CHILD_TIMEOUT)
        assert process.exitcode is not None, "child hung"
        if process.exitcode == 0:
            assert ours.poll(1) and ours.recv() == "done"
            return True
        assert process.exitcode == -signal.SIGKILL, process.exitcode
        return False
    finally:
        if process.is_alive():
            process.kill()
            process.join(CHILD_TIMEOUT)
        ours.close()


_CALLS = ("open", "write", "fsync", "close", "fchmod", "link", "replace", "rename", "unlink")


def _killed_at(state_dir: Path, action: str, kill_at: int, conn: Connection) -> None:
    backend = LocalStateBackend(state_dir)
    doc = backend.read()
    count = 0

    def counted(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal count
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return call

    with _patched_os({name: counted(getattr(os, name)) for name in _CALLS}):
        if action == "write":
            assert doc is not None
            backend.write({**doc, "n": doc["serial"] + 1})
        else:
            backend.lock("apply", 0)
    conn.send("done")


@contextmanager
def _patched_os(replacements: dict[str, Callable[..., Any]]) -> Iterator[None]:
    saved = {name: getattr(os, name) for name in replacements}
    for name, fn in replacements.items():
        setattr(os, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(os, name, fn)
