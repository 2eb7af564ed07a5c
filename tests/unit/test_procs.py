"""declare.procs: detached processes, identity by (pid, start time), group stop, ports, logs.

Real processes (small Python children started by these tests and stopped by their PIDs).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from declare import procs

# A parent that starts a child in its own process group, prints the child's PID, and sleeps.
# With IGNORE_TERM set, both ignore SIGTERM (so only SIGKILL stops them).
PARENT_WITH_CHILD = """
import os, signal, subprocess, sys, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(60)
"""
CHILD = """
import os, signal, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(60)
"""


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _pid_alive(pid: int) -> bool:
    fields = procs._stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[procs.ProcessId]]:
    """Processes a test starts; any still running at the end are killed by their group."""
    mine: list[procs.ProcessId] = []
    yield mine
    for proc in mine:
        if procs.is_running(proc):
            os.killpg(proc.pid, signal.SIGKILL)
        procs._reap(proc.pid)


def _start_family(tmp_path: Path, ignore_term: bool = False) -> tuple[procs.ProcessId, int]:
    env = dict(os.environ)
    if ignore_term:
        env["IGNORE_TERM"] = "1"
    log = tmp_path / "family.log"
    proc = procs.start_detached([sys.executable, "-c", PARENT_WITH_CHILD, CHILD], log, env)
    _wait_for(lambda: log.read_text().strip() != "")
    child = int(log.read_text().split()[0])
    return proc, child


def test_start_detached_runs_in_its_own_session_with_output_to_log(
    tmp_path: Path, started: list[procs.ProcessId]
) -> None:
    log = tmp_path / "logs" / "one.log"
    script = "import os, sys; print('hello', os.environ['X_MARK']); sys.stdout.flush()"
    proc = procs.start_detached(
        [sys.executable, "-c", script + "; import time; time.sleep(60)"],
        log,
        {**os.environ, "X_MARK": "m1"},
    )
    started.append(proc)
    assert procs.is_running(proc)
    assert os.getpgid(proc.pid) == proc.pid  # its own group ...
    assert os.getsid(proc.pid) == proc.pid  # ... and its own session
    assert proc.start_time == procs.start_time_of(proc.pid)
    _wait_for(lambda: "hello m1" in log.read_text())


def test_start_detached_appends_to_an_existing_log(
    tmp_path: Path, started: list[procs.ProcessId]
) -> None:
    log = tmp_path / "a.log"
    log.write_text("earlier run\n")
    proc = procs.start_detached([sys.executable, "-c", "print('later run')"], log, os.environ)
    started.append(proc)
    _wait_for(lambda: "later run" in log.read_text())
    assert log.read_text().startswith("earlier run\n")


def test_a_reused_pid_is_not_the_process(tmp_path: Path, started: list[procs.ProcessId]) -> None:
    proc = procs.start_detached([sys.executable, "-c", CHILD], tmp_path / "l.log", os.environ)
    started.append(proc)
    impostor = procs.ProcessId(proc.pid, proc.start_time + 1)
    assert procs.is_running(proc)
    assert not procs.is_running(impostor)
    procs.stop(impostor, grace_seconds=0.2)  # must not signal the real process
    time.sleep(0.1)
    assert procs.is_running(proc)


def test_a_zombie_is_not_running(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = procs.ProcessId(child.pid, procs.start_time_of(child.pid) or 0)
    _wait_for(lambda: (procs._stat_fields(child.pid) or ["Z"])[0] == "Z")
    assert not procs.is_running(proc)  # exited, not yet reaped
    child.wait()


def test_stop_ends_the_whole_group(tmp_path: Path, started: list[procs.ProcessId]) -> None:
    proc, child = _start_family(tmp_path)
    started.append(proc)
    assert procs.group_alive(proc.pid)
    t0 = time.monotonic()
    procs.stop(proc, grace_seconds=5.0)
    assert time.monotonic() - t0 < 3.0  # SIGTERM was enough: no wait for the grace period
    assert not procs.is_running(proc)
    assert not _pid_alive(child)
    assert not procs.group_alive(proc.pid)


def test_stop_kills_a_group_that_ignores_sigterm_after_the_grace(
    tmp_path: Path, started: list[procs.ProcessId]
) -> None:
    proc, child = _start_family(tmp_path, ignore_term=True)
    started.append(proc)
    t0 = time.monotonic()
    procs.stop(proc, grace_seconds=0.5)
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed < 4.0
    assert not _pid_alive(child)
    assert not procs.group_alive(proc.pid)


def test_stop_of_a_finished_process_is_a_noop(tmp_path: Path) -> None:
    proc = procs.start_detached([sys.executable, "-c", "pass"], tmp_path / "l.log", os.environ)
    _wait_for(lambda: not procs.is_running(proc))
    procs.stop(proc, grace_seconds=0.1)
    procs.stop(proc, grace_seconds=0.1)
    assert not procs.group_alive(proc.pid)


def test_process_id_round_trips_through_json() -> None:
    proc = procs.ProcessId(1234, 98765)
    assert procs.ProcessId.from_json(proc.to_json()) == proc


def test_venv_path_env_puts_the_interpreter_bin_first_once() -> None:
    bindir = str(Path(sys.executable).parent)
    env = procs.venv_path_env({"PATH": "/usr/bin:/bin", "OTHER": "x"})
    assert env["PATH"].split(os.pathsep) == [bindir, "/usr/bin", "/bin"]
    assert env["OTHER"] == "x"
    again = procs.venv_path_env(env)
    assert again["PATH"].split(os.pathsep).count(bindir) == 1


def test_free_port_is_bindable_and_respects_exclude() -> None:
    port = procs.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    excluded = frozenset({port})
    assert procs.free_port(exclude=excluded) != port


def test_port_open_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert procs.port_open("127.0.0.1", port)
    assert not procs.port_open("127.0.0.1", port)


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert procs.log_tail(log, 3) == "line 97\nline 98\nline 99"
    assert procs.log_tail(tmp_path / "missing.log") == ""
