"""What the local provider and its fork server agree on: file names, the wire format, env rules.

The fork server of a project state folder and an interpreter keeps its files in
`state_dir/local/forkserver/` (`ForkServerPaths`): `<key>.sock` (its unix socket, 0600),
`<key>.json` (its record: pid and start time, written by the provider that started it),
`<key>.log` (its output) and `<key>.learned.json` (the modules it learned to import), where
`<key>` is derived from the interpreter's path.

The wire format is one JSON object per line each way, at most `MAX_LINE` bytes:

    {"op": "ping"}  ->  {"ok": true, "pid": ..., "start_time": ..., "threads": [names],
                         "children": [pids], "learning": <modules queued>}
    {"op": "fork", "replica_id": ..., "source": <local model path>, "host": ..., "port": ...,
     "workers": ..., "env": {...}, "replica_keys": [...], "log": <path>, "cwd": <path>}
        ->  {"ok": true, "pid": ..., "start_time": ...}, then {"op": "ack"} from the provider
            (a child not acknowledged within 10 s is killed: it would have no record)
        or  {"ok": false, "error": "...", "stale": <bool>}

`replica_keys` names the variables the replica sets on top of the provider's own environment.
A fork is refused when the replica's environment differs from the fork server's in a
variable read while the server imported its modules (`startup_mismatch`): those were read
once, with the server's values. "stale" says the difference is in the provider's own
environment (or the installed packages changed), so a new fork server would not differ.

Unix socket addresses are limited to 107 bytes, so sockets are reached through an open
descriptor of their folder (`/proc/self/fd/N/<name>`, `socket_address`).

What it does not do: start, stop or serve anything (`providers.local.forkclient`,
`providers.local.forkserver`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.local.proctitle import ROOM_VARIABLE

__all__ = [
    "IDLE_SECONDS",
    "MAX_LINE",
    "ForkServerPaths",
    "read_line",
    "send_line",
    "socket_address",
    "startup_mismatch",
]

# A fork server with no replica and no request for this long exits by itself.
IDLE_SECONDS = 3600.0
MAX_LINE = 4 * 1024 * 1024

# Read by the interpreter or by native libraries when they load (not through os.environ):
# a replica that sets them differently from the fork server cannot be forked from it.
_STARTUP_PREFIXES = (
    "PYTHON", "LD_", "MALLOC_", "OMP_", "OPENBLAS_", "GOTO", "MKL_", "KMP_", "VECLIB_",
    "NUMEXPR_", "LC_", "JEMALLOC", "ARROW_",
)  # fmt: skip
_STARTUP_NAMES = frozenset({"GLIBC_TUNABLES", "LANG", "LANGUAGE", "TZ"})
# Set by the fork server for itself, or read again by the forked child (MLflow's telemetry
# client is set up anew there), so they may differ.
_EXEMPT = frozenset(
    {ROOM_VARIABLE, "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "_MLFLOW_TELEMETRY_SESSION_ID"}
)
# Only whether they are set matters to what reads them at import (MLflow's "in tests?").
_PRESENCE_ONLY = frozenset({"PYTEST_CURRENT_TEST"})


@dataclass(frozen=True)
class ForkServerPaths:
    """Where the fork server of one state folder (`state_dir/local`) and interpreter lives."""

    folder: Path
    key: str

    @classmethod
    def of(cls, local_dir: Path, python: str = sys.executable) -> ForkServerPaths:
        key = hashlib.sha256(python.encode()).hexdigest()[:12]
        return cls(local_dir / "forkserver", key)

    @property
    def socket(self) -> Path:
        return self.folder / f"{self.key}.sock"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.key}.json"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.key}.log"

    @property
    def learned(self) -> Path:
        return self.folder / f"{self.key}.learned.json"


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for `path` short enough for AF_UNIX, valid inside the block."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def send_line(sock: socket.socket, message: Mapping[str, Any]) -> None:
    sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")


def read_line(sock: socket.socket) -> dict[str, Any]:
    """One JSON object line from `sock`; ValueError if it is not one (or too long)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_LINE:
            raise ValueError(f"message longer than {MAX_LINE} bytes")
    message = json.loads(data.decode() or "null")
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return message


def _read_at_startup(name: str) -> bool:
    return name in _STARTUP_NAMES or name.startswith(_STARTUP_PREFIXES)


def startup_mismatch(
    server_env: Mapping[str, str], replica_env: Mapping[str, str], read: Collection[str]
) -> list[str]:
    """The variables, read at startup or among `read`, on which the two environments differ."""
    names = {k for k in (*server_env, *replica_env) if _read_at_startup(k)} | set(read)
    differ = []
    for name in sorted(names - _EXEMPT):
        ours, theirs = server_env.get(name), replica_env.get(name)
        if name in _PRESENCE_ONLY:
            if (ours is None) != (theirs is None):
                differ.append(name)
        elif ours != theirs:
            differ.append(name)
    return differ
