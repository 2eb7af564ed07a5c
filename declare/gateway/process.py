"""Starting, finding and stopping a project's gateway process.

The gateway runs detached (it outlives `declare apply`). Its files sit in
`state_dir/gateway/`: `admin-token` (mode 0600, a new random token per start), `gateway.json`
(the record: process identity, address, settings) and `gateway.log`. The end-user auth token
is passed through the environment only and never written to disk.

A gateway listens with SO_REUSEPORT, so a new one (a settings change) binds the same port
while the old one still listens, loads the table the old one kept (`table.json`) before it
accepts, and only then is the old one stopped (`retire_gateway`): it closes its socket and
drains. Linux lets only sockets of the same effective user share a port that way: another
user's process cannot bind the gateway's port alongside it.

Stopping signals only the recorded process, identified by PID and start time. This module
does not push routing tables (see `declare.gateway.client`) and does not serve anything
itself (see `server.py`); the process's command line is built here and parsed in
`__main__.py`.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from declare import procs
from declare.environment import base_environment
from declare.errors import GatewayError
from declare.gateway import AUTH_ENV, MAX_BODY_BYTES
from declare.gateway.client import GatewayClient

RECORD_NAME = "gateway.json"
TOKEN_NAME = "admin-token"
TABLE_NAME = "table.json"  # the table pushed last: a gateway started again loads it
LOG_NAME = "gateway.log"
ACCESS_LOG_NAME = "access.log"  # one JSON line per request, when gateway.access_log is on
# The directory holding the `declare` package, for PYTHONPATH (a source checkout too).
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class GatewayRecord:
    """What `gateway.json` says about a started gateway: process, address, settings."""

    process: procs.ProcessId
    host: str
    port: int
    log_path: Path
    admin_token_file: Path
    started_at: float  # unix seconds
    max_body_bytes: int = MAX_BODY_BYTES
    queue_timeout: float = 30.0
    upstream_timeout: float = 300.0
    auth: bool = False  # whether end users need a bearer token (the token is not recorded)
    hold_queue: int = 1000  # most requests held per endpoint waiting for a replica
    eject_seconds: float = 2.0  # how long an unreachable replica is skipped
    capture_root: Path | None = None  # the folder of the inference tables
    # the hash of the settings it was started with (`GatewaySettings.hash`; "": not said,
    # a gateway started by a declare that did not record it)
    settings_hash: str = ""
    # whether it listens with SO_REUSEPORT, so a new gateway can take over its port (False:
    # started by a declare before the handover; it is stopped before a new one starts)
    reuse_port: bool = False

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def admin_token(self) -> str:
        try:
            return self.admin_token_file.read_text().strip()
        except OSError as exc:
            raise GatewayError(
                f"cannot read the gateway's admin token {self.admin_token_file}: {exc}"
            ) from exc

    def client(self, timeout: float = 10.0) -> GatewayClient:
        return GatewayClient(self.base_url, self.admin_token(), timeout=timeout)

    def to_json(self) -> dict[str, Any]:
        return {
            "process": self.process.to_json(),
            "host": self.host,
            "port": self.port,
            "log_path": str(self.log_path),
            "admin_token_file": str(self.admin_token_file),
            "started_at": self.started_at,
            "max_body_bytes": self.max_body_bytes,
            "queue_timeout": self.queue_timeout,
            "upstream_timeout": self.upstream_timeout,
            "auth": self.auth,
            "hold_queue": self.hold_queue,
            "eject_seconds": self.eject_seconds,
            "capture_root": None if self.capture_root is None else str(self.capture_root),
            "settings_hash": self.settings_hash,
            "reuse_port": self.reuse_port,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GatewayRecord:
        return cls(
            process=procs.ProcessId.from_json(data["process"]),
            host=str(data["host"]),
            port=int(data["port"]),
            log_path=Path(data["log_path"]),
            admin_token_file=Path(data["admin_token_file"]),
            started_at=float(data["started_at"]),
            max_body_bytes=int(data.get("max_body_bytes", MAX_BODY_BYTES)),
            queue_timeout=float(data.get("queue_timeout", 30.0)),
            upstream_timeout=float(data.get("upstream_timeout", 300.0)),
            auth=bool(data.get("auth", False)),
            hold_queue=int(data.get("hold_queue", 1000)),
            eject_seconds=float(data.get("eject_seconds", 2.0)),
            capture_root=Path(data["capture_root"]) if data.get("capture_root") else None,
            settings_hash=str(data.get("settings_hash", "")),
            reuse_port=bool(data.get("reuse_port", False)),
        )


def gateway_dir(state_dir: Path) -> Path:
    return state_dir / "gateway"


def read_gateway_record(state_dir: Path) -> GatewayRecord | None:
    """The record of the project's gateway, or None when none was started (or it was stopped)."""
    path = gateway_dir(state_dir) / RECORD_NAME
    try:
        data = json.loads(path.read_text())
        return GatewayRecord.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GatewayError(
            f"the gateway record {path} is unreadable ({exc}); stop the gateway process by "
            "hand if one runs, then delete the file"
        ) from exc


def _health(host: str, port: int) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"http://{host}:{port}/_declare/health", timeout=1.0, trust_env=False)
        data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) and "pid" in data else None


def gateway_running(record: GatewayRecord) -> bool:
    """True when the recorded process is alive (same PID and start time) and answers health."""
    if not procs.is_running(record.process):
        return False
    health = _health(record.host, record.port)
    return health is not None and health.get("pid") == record.process.pid


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _write_record(path: Path, record: GatewayRecord) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(record.to_json(), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _log_since(path: Path, offset: int, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start_gateway(
    state_dir: Path,
    host: str,
    port: int,
    auth_token: str | None,
    max_body_bytes: int = MAX_BODY_BYTES,
    queue_timeout: float = 30.0,
    upstream_timeout: float = 300.0,
    startup_timeout: float = 20.0,
    *,
    hold_queue: int = 1000,
    eject_seconds: float = 2.0,
    body_timeout: float = 30.0,
    header_timeout: float = 10.0,
    idle_timeout: float = 75.0,
    capture_root: Path | None = None,
    capture_max_payload_bytes: int | None = None,
    access_log: bool = False,
    settings_hash: str = "",
    take_over: GatewayRecord | None = None,
) -> GatewayRecord:
    """Start the project's gateway (SO_REUSEPORT), wait until it answers, record it.

    Keyword arguments: the process's options of the same names (`capture_root` None: nothing
    captured); `settings_hash` is recorded for a declare that lost its state. `take_over`:
    the running gateway whose port it shares (recorded in its stead; the caller stops it).
    GatewayError when this project's gateway runs already (and is not `take_over`), the port
    is taken by another program, or the process exits or stays silent at start-up.
    """
    directory = gateway_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if take_over is None:
        _refuse_when_taken(state_dir, host, port)
    token_file, log_path = directory / TOKEN_NAME, directory / LOG_NAME
    _write_private(token_file, secrets.token_urlsafe(32))
    argv = _gateway_argv(host, port, token_file, max_body_bytes, queue_timeout, upstream_timeout)
    timeouts = (body_timeout, header_timeout, idle_timeout)
    capture = (capture_root, capture_max_payload_bytes)
    argv += _more_argv(directory, hold_queue, eject_seconds, timeouts, capture, access_log)
    proc, offset = _spawn(argv, log_path, auth_token, directory)
    _wait_until_answering(proc, host, port, log_path, offset, startup_timeout)
    record = GatewayRecord(
        process=proc,
        host=host,
        port=port,
        log_path=log_path,
        admin_token_file=token_file,
        started_at=time.time(),
        max_body_bytes=max_body_bytes,
        queue_timeout=queue_timeout,
        upstream_timeout=upstream_timeout,
        auth=bool(auth_token),
        hold_queue=hold_queue,
        eject_seconds=float(eject_seconds),
        capture_root=capture_root,
        settings_hash=settings_hash,
        reuse_port=True,
    )
    _write_record(directory / RECORD_NAME, record)
    return record


def _spawn(
    argv: list[str], log_path: Path, auth_token: str | None, directory: Path
) -> tuple[procs.ProcessId, int]:
    """Start the gateway process detached; its identity and where its log begins now."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    try:
        proc = procs.start_detached(argv, log_path, _gateway_env(auth_token), cwd=directory)
    except OSError as exc:
        raise GatewayError(f"cannot start the gateway process: {exc}") from exc
    return proc, offset


def _refuse_when_taken(state_dir: Path, host: str, port: int) -> None:
    """GatewayError when this project's gateway already runs or `host:port` is in use."""
    existing = read_gateway_record(state_dir)
    if existing is not None and gateway_running(existing):
        raise GatewayError(
            f"the project's gateway already runs (pid {existing.process.pid}, "
            f"{existing.base_url}); stop it first"
        )
    if procs.port_open(host, port):
        other = _health(host, port)
        owner = f"another declare gateway (pid {other['pid']})" if other else "another program"
        raise GatewayError(
            f"cannot start the gateway on {host}:{port}: the port is taken by {owner}; "
            "choose another gateway port"
        )


def _gateway_argv(
    host: str,
    port: int,
    token_file: Path,
    max_body_bytes: int,
    queue_timeout: float,
    upstream_timeout: float,
) -> list[str]:
    """The command line of the gateway process (`python -m declare.gateway ...`)."""
    return [
        sys.executable,
        "-m",
        "declare.gateway",
        "--host",
        host,
        "--port",
        str(port),
        "--admin-token-file",
        str(token_file),
        "--max-body-bytes",
        str(max_body_bytes),
        "--queue-timeout",
        str(queue_timeout),
        "--upstream-timeout",
        str(upstream_timeout),
        "--reuse-port",
    ]


def _more_argv(
    directory: Path,
    hold_queue: int,
    eject_seconds: float,
    timeouts: tuple[float, float, float],
    capture: tuple[Path | None, int | None],
    access_log: bool,
) -> list[str]:
    """The options after the first ones; `timeouts`: body, request head, idle connection;
    `capture`: its root and payload limit (None: not given)."""
    capture_root, capture_max_payload_bytes = capture
    argv = ["--hold-queue", str(hold_queue), "--eject-seconds", repr(float(eject_seconds))]
    for option, seconds in zip(("--body", "--header", "--idle"), timeouts, strict=True):
        argv += [f"{option}-timeout", repr(float(seconds))]
    argv += ["--table-file", str(directory / TABLE_NAME)]
    if capture_root is not None:
        argv += ["--capture-root", str(capture_root)]
    if capture_max_payload_bytes is not None:
        argv += ["--capture-max-payload-bytes", str(capture_max_payload_bytes)]
    if access_log:
        argv += ["--access-log", str(directory / ACCESS_LOG_NAME)]
    return argv


def _gateway_env(auth_token: str | None) -> dict[str, str]:
    """The gateway's environment: the allow-listed base (declare.environment: no secret,
    no MLflow credentials, no state DSN), the end users' token (or none), declare
    importable."""
    env = procs.venv_path_env(base_environment(os.environ))
    if auth_token:
        env[AUTH_ENV] = auth_token
    # Make the running declare importable even when it is not installed (a source checkout).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def _wait_until_answering(
    proc: procs.ProcessId, host: str, port: int, log_path: Path, offset: int, timeout: float
) -> None:
    """Return once `proc` answers health on `host:port`; GatewayError (with the log's tail
    since `offset`) when it exits first or stays silent for `timeout` s (then it is stopped).
    """
    deadline = time.monotonic() + timeout
    while True:
        if not procs.is_running(proc):
            raise GatewayError(
                f"the gateway exited at start-up ({log_path}):\n{_log_since(log_path, offset)}"
            )
        health = _health(host, port)
        if health is not None and health.get("pid") == proc.pid:
            return
        if time.monotonic() > deadline:
            procs.stop(proc, grace_seconds=2.0)
            raise GatewayError(
                f"the gateway did not answer on {host}:{port} within {timeout:g} s "
                f"({log_path}):\n{_log_since(log_path, offset)}"
            )
        time.sleep(0.05)


def stop_gateway(state_dir: Path, grace_seconds: float = 30.0) -> bool:
    """Stop the recorded gateway (by PID and start time only) and forget it.

    Requests in flight may finish within `grace_seconds`. Returns True when a running gateway
    was stopped, False when none ran. The log is kept.
    """
    record = read_gateway_record(state_dir)
    if record is None:
        return False
    was_running = procs.is_running(record.process)
    procs.stop(record.process, grace_seconds=grace_seconds)
    directory = gateway_dir(state_dir)
    for name in (RECORD_NAME, TOKEN_NAME, TABLE_NAME):
        (directory / name).unlink(missing_ok=True)
    return was_running


def can_take_over(record: GatewayRecord | None) -> bool:
    """True when `record`'s gateway runs and listens with SO_REUSEPORT: a new gateway may
    bind its port while it still listens (a gateway started by an older declare may not)."""
    return record is not None and record.reuse_port and gateway_running(record)


def retire_gateway(old: GatewayRecord, grace_seconds: float = 30.0) -> None:
    """Stop `old`, a gateway another one took over from (by PID and start time): SIGTERM
    makes it close its listening socket and let its requests in flight finish, then exit.
    Its files are the new gateway's now and are kept."""
    procs.stop(old.process, grace_seconds=grace_seconds)
