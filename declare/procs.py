"""Detached processes that outlive declare, identified so that a reused PID is never mistaken.

A detached process is started in a new session (its PID is its process group id), with
stdin closed and output to a log file. It is identified by (pid, start time in clock ticks
since boot, from /proc/PID/stat): a PID the kernel reused for another program has another
start time. Stopping signals the whole process group: SIGTERM, a grace period, SIGKILL.

Linux only (/proc). Does not know what runs in the process; callers keep their own records.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProcessId:
    pid: int
    start_time: int  # field 22 of /proc/PID/stat: start time in clock ticks after boot

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessId:
        return cls(int(data["pid"]), int(data["start_time"]))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest  # rest[0] is field 3 (state)


def start_time_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return int(fields[19])  # field 22


def is_running(proc: ProcessId) -> bool:
    """True when `proc` is that very process, alive (not a zombie, not a reused PID)."""
    fields = _stat_fields(proc.pid)
    if fields is None:
        return False
    if fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == proc.start_time


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process remains in the process group `pgid`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[0] in ("Z", "X"):
            continue
        if int(fields[2]) == pgid:  # field 5: pgrp
            return True
    return False


def venv_path_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the running interpreter's bin folder first on PATH.

    MLflow's launcher runs `uvicorn` by name, so a venv used without activation must be on
    PATH or the replica fails with 'uvicorn: command not found'.
    """
    out = dict(env)
    bindir = str(Path(sys.executable).parent)
    parts = [p for p in out.get("PATH", os.defpath).split(os.pathsep) if p]
    if bindir not in parts:
        parts.insert(0, bindir)
    out["PATH"] = os.pathsep.join(parts)
    return out


def start_detached(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path | None = None
) -> ProcessId:
    """Start `argv` in its own session, output appended to `log_path`; return its identity."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            close_fds=True,
        )
    # The child is not waited for by this process; a short-lived declare leaves it to init.
    # Keep a reference-free Popen: mark it as returned so no ResourceWarning is raised.
    proc.returncode = 0
    started = None
    for _ in range(200):
        started = start_time_of(proc.pid)
        if started is not None:
            break
        time.sleep(0.005)
    if started is None:
        raise OSError(f"process {proc.pid} vanished right after start: {argv[0]}")
    return ProcessId(proc.pid, started)


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our own child (in-process callers, tests)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(proc: ProcessId, grace_seconds: float = 10.0) -> None:
    """SIGTERM the process group of `proc`, wait up to `grace_seconds`, then SIGKILL.

    Does nothing when `proc` is no longer that process (never signals a reused PID).
    """
    if not is_running(proc):
        _reap(proc.pid)
        return
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not group_alive(pgid):
            return
        time.sleep(0.05)


def free_port(host: str = "127.0.0.1", exclude: frozenset[int] = frozenset()) -> int:
    """A TCP port on `host` that nothing listens on now (and not in `exclude`)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port
    raise OSError("no free port found on loopback")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def log_since(path: Path, offset: int, limit: int = 1024 * 1024) -> tuple[str, int]:
    """The whole lines of `path` after byte `offset` (at most about `limit` bytes), and the
    offset to read on from. A file shorter than `offset` was replaced: read it from 0."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return "", offset
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) < limit:
        return "", offset  # a line still being written
    if end == 0:
        end = len(data)  # one line longer than `limit`: give what there is
    return data[:end].decode("utf-8", "replace"), offset + end
