"""The conformance suite every state backend's tests run (Terraform's statemgr.TestFull).

Each `check_*` function takes a `BackendFactory`: a picklable callable (for instance
`functools.partial(LocalStateBackend, path)`) that returns a new backend instance on the same
store each time it is called. Two instances are two clients, as two runs of declare are;
the lock checks also build instances in other *processes* (spawned, so nothing is shared
but the store). A backend's test module runs them all:

    @pytest.mark.parametrize("check", CHECKS, ids=check_id)
    def test_conformance(check, factory): check(factory)

The checks know no backend: only the `StateBackend` interface and the error classes.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

from declare import __version__
from declare.errors import ConfigError, StaleStateError, StateError, StateLockedError
from declare.state.backend import FORMAT_VERSION, RUNTIME_OPERATION, LockInfo, StateBackend

BackendFactory = Callable[[], StateBackend]

CHILD_TIMEOUT = 30.0  # no step of a child process may take longer than this
_spawn = multiprocessing.get_context("spawn")


# ---- reading and writing ---------------------------------------------------------------


def check_empty_read(factory: BackendFactory) -> None:
    backend = factory()
    assert backend.read() is None
    assert backend.lock_info() is None


def check_first_write_sets_serial_and_lineage(factory: BackendFactory) -> None:
    doc = {"endpoints": {"iris": {"replicas": [1, 2]}}, "gateway": None}
    stored = factory().write(doc)
    assert stored["format_version"] == FORMAT_VERSION
    assert stored["serial"] == 1
    assert uuid.UUID(stored["lineage"]).version == 4
    assert list(stored)[:3] == ["format_version", "serial", "lineage"]
    assert stored["endpoints"] == doc["endpoints"] and stored["gateway"] is None
    assert doc == {"endpoints": {"iris": {"replicas": [1, 2]}}, "gateway": None}  # unchanged
    assert factory().read() == stored


def check_payload_round_trips(factory: BackendFactory) -> None:
    payload = {
        "text": 'naïve ✓ "quoted" \n newline',
        "numbers": [0, -1, 2**53, 0.1, 1e-300],
        "nested": {"a": {"b": [True, False, None, {}]}},
    }
    stored = factory().write(payload)
    read = factory().read()
    assert read is not None
    assert {k: read[k] for k in payload} == payload
    assert read == stored


def check_serial_increments(factory: BackendFactory) -> None:
    backend = factory()
    first = backend.write({"n": 0})
    doc = first
    for n in range(1, 4):
        doc = backend.write({**doc, "n": n})
        assert doc["serial"] == n + 1
        assert doc["lineage"] == first["lineage"]
    other = factory().read()
    assert other is not None
    assert (other["serial"], other["n"]) == (4, 3)


def check_stale_write_refused(factory: BackendFactory) -> None:
    first = factory().write({"owner": "nobody"})
    mine = factory().read()
    assert mine is not None
    theirs = factory().write({**first, "owner": "them"})
    with pytest.raises(StaleStateError) as err:
        factory().write({**mine, "owner": "me"})
    message = str(err.value)
    assert str(mine["serial"]) in message and str(theirs["serial"]) in message
    assert factory().read() == theirs


def check_lineage_mismatch_refused(factory: BackendFactory) -> None:
    stored = factory().write({"owner": "us"})
    foreign = str(uuid.uuid4())
    with pytest.raises(StaleStateError) as err:
        factory().write({**stored, "lineage": foreign, "owner": "elsewhere"})
    assert foreign in str(err.value) and stored["lineage"] in str(err.value)
    # A document that starts a new state (no lineage) may not replace an existing one either.
    with pytest.raises(StaleStateError):
        factory().write({"owner": "fresh start"})
    with pytest.raises(StaleStateError):
        factory().write({"serial": 0, "lineage": "", "owner": "fresh start"})
    assert factory().read() == stored


def check_value_that_is_not_json_refused(factory: BackendFactory) -> None:
    stored = factory().write({"ok": True})
    with pytest.raises(StateError) as err:
        factory().write({**stored, "created": datetime.now()})
    assert "JSON" in str(err.value)
    with pytest.raises(StateError):
        factory().write({**stored, "ratio": float("nan")})
    assert factory().read() == stored


def check_concurrent_locked_writers_serialize(factory: BackendFactory) -> None:
    _concurrent_increments(factory, use_lock=True)


def check_concurrent_unlocked_writers_lose_nothing(factory: BackendFactory) -> None:
    """Writers that skip the lock get StaleStateError rather than overwrite each other."""
    _concurrent_increments(factory, use_lock=False)


# ---- locking --------------------------------------------------------------------------


def check_lock_info_names_the_holder(factory: BackendFactory) -> None:
    backend = factory()
    info = backend.lock("plan", 0)
    try:
        assert uuid.UUID(info.id)
        assert (info.operation, info.pid, info.version) == ("plan", os.getpid(), __version__)
        assert "@" in info.who
        assert datetime.fromisoformat(info.created).tzinfo is not None
        assert info.replaced is None
        assert factory().lock_info() == info
    finally:
        backend.unlock(info.id)
    assert factory().lock_info() is None


def check_lock_arguments_checked(factory: BackendFactory) -> None:
    backend = factory()
    with pytest.raises(ConfigError):
        backend.lock("", 1)
    with pytest.raises(ConfigError):
        backend.lock("apply", -1)
    assert backend.lock_info() is None


def check_second_lock_in_one_process_refused(factory: BackendFactory) -> None:
    backend = factory()
    info = backend.lock("apply", 0)
    try:
        with pytest.raises(StateError) as err:
            backend.lock("plan", 0)
        assert not isinstance(err.value, StateLockedError)  # refused at once, not waited for
        assert "already holds" in str(err.value) and info.id in str(err.value)
        assert factory().lock_info() == info
    finally:
        backend.unlock(info.id)
    assert factory().lock_info() is None


def check_unlock_needs_the_right_id(factory: BackendFactory) -> None:
    backend = factory()
    info = backend.lock("apply", 0)
    with pytest.raises(StateError) as err:
        backend.unlock("not-" + info.id)
    assert info.id in str(err.value) and "force-unlock" in str(err.value)
    assert factory().lock_info() == info
    backend.unlock(info.id)
    with pytest.raises(StateError):
        backend.unlock(info.id)  # not held any more


def check_locked_context_releases_on_error(factory: BackendFactory) -> None:
    backend = factory()
    with pytest.raises(RuntimeError), backend.locked("apply", 0) as info:
        assert factory().lock_info() == info
        raise RuntimeError("the body failed")
    assert factory().lock_info() is None
    with backend.locked("apply", 0):  # free again
        pass


def check_lock_blocks_another_process(factory: BackendFactory) -> None:
    backend = factory()
    info = backend.lock("apply", 0)
    try:
        outcome, message, waited = _try_lock_elsewhere(factory, "plan", 0.5)
        assert outcome == "locked", message
        assert 0.45 <= waited < 5, waited
        for part in (info.id, info.who, "apply", str(os.getpid()), info.created):
            assert part in message, (part, message)
        assert f"declare force-unlock {info.id}" in message

        outcome, message, waited = _try_lock_elsewhere(factory, "plan", 0.0)
        assert outcome == "locked" and waited < 0.4, (outcome, waited)
        assert factory().lock_info() == info
    finally:
        backend.unlock(info.id)


def check_unlock_lets_a_waiting_process_in(factory: BackendFactory) -> None:
    backend = factory()
    info = backend.lock("apply", 0)
    unlocked = False
    try:
        with _child(_child_try_lock, factory, "plan", 20.0) as child:
            assert child.recv() == "waiting"
            time.sleep(0.3)
            assert factory().lock_info() == info  # it waits rather than takes over
            backend.unlock(info.id)
            unlocked = True
            outcome, theirs, waited = child.recv()
        assert outcome == "ok", theirs
        assert theirs["pid"] != os.getpid() and theirs["id"] != info.id
        assert 0.25 <= waited < 10, waited
    finally:
        if not unlocked:
            backend.unlock(info.id)
    assert factory().lock_info() is None  # the child unlocked before it exited


def check_a_runtime_lock_is_waited_for_whatever_the_timeout(factory: BackendFactory) -> None:
    """The runtime holds the lock only while it replaces or scales: another command with
    --lock-timeout 0 waits for it instead of failing."""
    backend = factory()
    info = backend.lock(RUNTIME_OPERATION, 0)
    unlocked = False
    try:
        with _child(_child_try_lock, factory, "apply", 0.0) as child:
            assert child.recv() == "waiting"
            time.sleep(0.5)
            assert factory().lock_info() == info
            backend.unlock(info.id)
            unlocked = True
            outcome, theirs, waited = child.recv()
        assert outcome == "ok", theirs
        assert waited >= 0.4, waited
    finally:
        if not unlocked:
            backend.unlock(info.id)


def check_force_unlock(factory: BackendFactory) -> None:
    backend = factory()
    with _child(_child_hold, factory, "apply") as child:
        held = LockInfo.from_json(child.recv(), "child")
        assert backend.lock_info() == held and held.pid == child.pid

        with pytest.raises(StateError) as err:
            backend.force_unlock(str(uuid.uuid4()))
        assert held.id in str(err.value)
        assert factory().lock_info() == held

        backend.force_unlock(held.id)  # its holder is alive (hung, say): still removed
        assert factory().lock_info() is None
        mine = backend.lock("apply", 0)
        try:
            # The old holder finishing late must not release the new holder's lock.
            child.send("unlock")
            outcome, _ = child.recv()
            assert outcome in ("ok", "error")
            assert factory().lock_info() == mine
            outcome, message, _ = _try_lock_elsewhere(factory, "plan", 0.0)
            assert outcome == "locked" and mine.id in message
        finally:
            backend.unlock(mine.id)
    with pytest.raises(StateError):
        factory().force_unlock(held.id)  # nothing to unlock now


def check_lock_of_a_killed_process_is_taken_over(factory: BackendFactory) -> None:
    with _child(_child_hold, factory, "apply") as child:
        held = LockInfo.from_json(child.recv(), "child")
        child.kill()
    assert factory().lock_info() == held  # the record outlives its holder
    backend = factory()
    info = backend.lock("destroy", 5)
    try:
        assert info.replaced is not None and info.replaced.id == held.id
        assert factory().lock_info() == info
    finally:
        backend.unlock(info.id)
    assert factory().lock_info() is None


CHECKS: tuple[Callable[[BackendFactory], None], ...] = (
    check_empty_read,
    check_first_write_sets_serial_and_lineage,
    check_payload_round_trips,
    check_serial_increments,
    check_stale_write_refused,
    check_lineage_mismatch_refused,
    check_value_that_is_not_json_refused,
    check_concurrent_locked_writers_serialize,
    check_concurrent_unlocked_writers_lose_nothing,
    check_lock_info_names_the_holder,
    check_lock_arguments_checked,
    check_second_lock_in_one_process_refused,
    check_unlock_needs_the_right_id,
    check_locked_context_releases_on_error,
    check_lock_blocks_another_process,
    check_unlock_lets_a_waiting_process_in,
    check_a_runtime_lock_is_waited_for_whatever_the_timeout,
    check_force_unlock,
    check_lock_of_a_killed_process_is_taken_over,
)


def check_id(check: Callable[[BackendFactory], None]) -> str:
    return check.__name__.removeprefix("check_")


# ---- child processes -------------------------------------------------------------------


class _Child:
    """A spawned process and our end of its pipe; every wait is bounded."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def recv(self) -> Any:
        if not self.conn.poll(CHILD_TIMEOUT):
            raise AssertionError(f"child {self.pid} sent nothing for {CHILD_TIMEOUT} s")
        return self.conn.recv()

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def kill(self) -> None:
        """SIGKILL, by PID, and reap."""
        self.process.kill()
        self.process.join(CHILD_TIMEOUT)


@contextmanager
def _child(target: Callable[..., None], *args: Any) -> Iterator[_Child]:
    ours, theirs = _spawn.Pipe()
    process = _spawn.Process(target=target, args=(*args, theirs), daemon=True)
    process.start()
    theirs.close()
    child = _Child(process, ours)
    try:
        yield child
        process.join(CHILD_TIMEOUT)
        assert not process.is_alive(), f"child {child.pid} did not finish"
    finally:
        if process.is_alive():
            child.kill()
        ours.close()


def _child_hold(factory: BackendFactory, operation: str, conn: Connection) -> None:
    """Take the lock, report it, then on "unlock" unlock and report; exit on EOF."""
    backend = factory()
    info = backend.lock(operation, CHILD_TIMEOUT)
    conn.send(info.to_json())
    try:
        command = conn.recv()
    except EOFError:
        return
    if command == "unlock":
        try:
            backend.unlock(info.id)
        except StateError as exc:
            conn.send(("error", str(exc)))
        else:
            conn.send(("ok", ""))


def _child_try_lock(
    factory: BackendFactory, operation: str, timeout: float, conn: Connection
) -> None:
    """Try to lock; report ("ok", lock json, seconds) or ("locked", message, seconds)."""
    backend = factory()
    conn.send("waiting")
    start = time.monotonic()
    try:
        info = backend.lock(operation, timeout)
    except StateLockedError as exc:
        conn.send(("locked", str(exc), time.monotonic() - start))
        return
    waited = time.monotonic() - start
    backend.unlock(info.id)
    conn.send(("ok", info.to_json(), waited))


def _try_lock_elsewhere(factory: BackendFactory, operation: str, timeout: float) -> Any:
    """What `_child_try_lock` reports from another process."""
    with _child(_child_try_lock, factory, operation, timeout) as child:
        assert child.recv() == "waiting"
        return child.recv()


def _child_increment(factory: BackendFactory, times: int, use_lock: bool, conn: Connection) -> None:
    """After "go", add one to the counter `times` times; report how many writes were stale."""
    backend = factory()
    conn.send("ready")
    conn.recv()
    stale = 0
    for i in range(times):
        while True:
            try:
                if use_lock:
                    with backend.locked("apply", CHILD_TIMEOUT):
                        _increment(backend, i)
                else:
                    _increment(backend, i)
                break
            except StaleStateError:
                if use_lock:
                    raise
                stale += 1
    conn.send(("done", stale))


def _increment(backend: StateBackend, i: int) -> None:
    doc = backend.read()
    assert doc is not None
    backend.write(
        {**doc, "counter": doc["counter"] + 1, "log": [*doc["log"], f"{os.getpid()}:{i}"]}
    )


def _concurrent_increments(factory: BackendFactory, use_lock: bool) -> None:
    writers, times = 4, 5
    factory().write({"counter": 0, "log": []})
    with _children(writers, _child_increment, factory, times, use_lock) as children:
        for child in children:
            assert child.recv() == "ready"
        for child in children:
            child.send("go")
        results = [child.recv() for child in children]
    assert all(outcome == "done" for outcome, _ in results), results
    final = factory().read()
    assert final is not None
    assert final["counter"] == writers * times
    assert len(set(final["log"])) == writers * times  # every increment kept, none twice
    assert final["serial"] == 1 + writers * times


@contextmanager
def _children(count: int, target: Callable[..., None], *args: Any) -> Iterator[list[_Child]]:
    with _child(target, *args) as first:
        if count == 1:
            yield [first]
            return
        with _children(count - 1, target, *args) as rest:
            yield [first, *rest]
