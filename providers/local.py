"""The local provider: each replica is a detached MLflow scoring server on loopback.

A replica is `python -m mlflow models serve -m <model> -h 127.0.0.1 -p PORT --env-manager local
-w 1`, started with the interpreter declare runs under, in its own session (so its process
group holds the MLflow launcher and the `uvicorn` child it starts), with output appended to
`state_dir/local/logs/<replica id>.log`. Request and response formats are therefore MLflow's.
The process outlives declare.

Each replica has a record, `state_dir/local/replicas/<replica id>.json`, written atomically
(temp file + os.replace) right after the process starts. The record holds the labels
(project, endpoint, entity, generation, index), the process identity (pid + start time from
/proc), the port, the log path and the pinned model URI, so `list_owned()` finds every replica
without the state file. A replica is ALIVE only while its recorded (pid, start time) is that
very process and not a zombie: a PID the kernel reused is never mistaken for a replica, and
`stop_replica` never signals it.

Stopping signals the whole process group (SIGTERM, grace, SIGKILL), removes the record and
keeps the log, renamed to `<replica id>.stopped.log`.

What it does not do: readiness (the core probes `/invocations`), GPUs (`workload_type` other
than CPU is refused: GPU workloads need the docker or gpu-hosts provider), building model
environments (`--env-manager local`: the model must load in declare's own interpreter), and
restarting dead replicas (that is drift, seen by `status`, repaired by the next apply).
Linux only (/proc).

Settings (`providers.local` in declare.yaml):
    workers: uvicorn workers per replica (default 1). More than one worker makes uvicorn
             run a process manager; without uvloop that adds ~44 ms to every response.
    host:    the IPv4 loopback address replicas listen on (default 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from declare import procs
from declare.errors import ConfigError, ProviderError
from declare.model import ReplicaHandle, ReplicaSpec, ResolvedModel
from declare.provider import BuildInfo, Liveness, ProviderContext, ReplicaStatus
from declare.secrets import without_secrets
from providers._shared import exclusive, loopback_host

__all__ = ["LocalProvider", "LocalSettings"]

PROVIDER_NAME = "local"
RECORD_FORMAT = 1
_ALLOWED_SETTINGS = ("workers", "host")
# Lines of a replica log that name the error that killed it (for DEAD reasons).
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:? ?")
# The MLflow launcher's own closing line when uvicorn failed: says nothing about why.
_LAUNCHER_LINE = re.compile(r"^Exception: Command .* returned non zero return code")


@dataclass(frozen=True)
class LocalSettings:
    """The validated `providers.local` settings."""

    workers: int = 1
    host: str = "127.0.0.1"

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> LocalSettings:
        """Validate declare.yaml's `providers.local`; raise ConfigError naming the field."""
        unknown = sorted(set(raw) - set(_ALLOWED_SETTINGS))
        if unknown:
            raise ConfigError(
                f"providers.local: unknown setting {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(_ALLOWED_SETTINGS)}"
            )
        workers = raw.get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(
                f"providers.local.workers: must be a whole number of at least 1, got {workers!r}"
            )
        host = loopback_host(
            raw.get("host", "127.0.0.1"),
            "providers.local.host",
            "local replicas listen on loopback only",
        )
        return cls(workers=workers, host=host)


def sanitize_id(text: str) -> str:
    """`text` lowercased, with every run of characters outside [a-z0-9-] turned into one '-'."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    return re.sub(r"-{2,}", "-", cleaned).strip("-")


def _is_local_path(source: str) -> bool:
    scheme = urllib.parse.urlparse(source).scheme
    return scheme in ("", "file")


def _local_path(source: str) -> Path:
    if source.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(source).path))
    return Path(source)


class LocalProvider:
    """Replicas as detached `mlflow models serve` processes on loopback (see module doc)."""

    name = PROVIDER_NAME

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.settings = LocalSettings.parse(context.settings)
        root = context.state_dir / PROVIDER_NAME
        self.records_dir = root / "replicas"
        self.logs_dir = root / "logs"
        self._lock_path = root / ".lock"

    # -- checks and builds ------------------------------------------------------------------

    def check(self) -> None:
        """Raise ProviderError naming what is missing: /proc, mlflow, uvicorn."""
        missing: list[str] = []
        if not Path("/proc/self/stat").exists():
            missing.append("/proc (the local provider runs on Linux only)")
        for module in ("mlflow", "uvicorn"):
            if importlib.util.find_spec(module) is None:
                missing.append(f"the Python package {module!r} in {sys.executable}")
        path = procs.venv_path_env(os.environ)["PATH"]
        if shutil.which("uvicorn", path=path) is None:
            missing.append(
                f"a 'uvicorn' command on PATH or beside {sys.executable} "
                "(MLflow's scoring server runs it by name)"
            )
        if missing:
            raise ProviderError("local provider cannot run replicas: missing " + "; ".join(missing))

    def build_info(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """The local provider serves from declare's own interpreter: nothing to build."""
        return BuildInfo(key=model.env_hash, needed=False, cached=True)

    def build(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """Nothing to build: the same answer as `build_info`."""
        return self.build_info(model, workload_type)

    # -- replicas ---------------------------------------------------------------------------

    def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Start one scoring server, record it, and return at once (it is not ready yet)."""
        where = f"endpoint {spec.endpoint!r}, served entity {spec.entity!r}"
        if spec.workload_type != "CPU":
            raise ProviderError(
                f"{where}: workload_type {spec.workload_type} needs a GPU, and the local "
                "provider runs CPU replicas only; use the docker or gpu-hosts provider for "
                "GPU workloads"
            )
        source = spec.model.source or spec.model.pinned_uri
        if not source:
            raise ProviderError(f"{where}: the resolved model has neither a source nor a URI")
        if _is_local_path(source) and not _local_path(source).exists():
            raise ProviderError(
                f"{where}: model {spec.model.describe()} has no files at {source}; "
                "was it deleted since the plan was made?"
            )
        with exclusive(self._lock_path):
            records = self._read_records()
            replica_id = self._new_id(spec, {r["id"] for r in records})
            used_ports = frozenset(int(r["port"]) for r in records)
            try:
                port = procs.free_port(self.settings.host, exclude=used_ports)
            except OSError as exc:
                raise ProviderError(f"{where}: no free port on {self.settings.host}") from exc
            log_path = self.logs_dir / f"{replica_id}.log"
            argv = [
                sys.executable, "-m", "mlflow", "models", "serve",
                "-m", source,
                "-h", self.settings.host,
                "-p", str(port),
                "--env-manager", "local",
                "-w", str(self.settings.workers),
            ]  # fmt: skip
            env = procs.venv_path_env(
                {
                    # Secrets of other replicas stay out; this one's come in environment_vars.
                    **without_secrets(os.environ),
                    **spec.model_env,
                    **spec.environment_vars,
                    # Lets an operator find declare's processes with `grep` in /proc/*/environ.
                    "DECLARE_PROJECT": spec.project,
                    "DECLARE_REPLICA_ID": replica_id,
                }
            )
            cwd = self.context.project_dir if self.context.project_dir.is_dir() else None
            try:
                proc = procs.start_detached(argv, log_path, env, cwd=cwd)
            except OSError as exc:
                raise ProviderError(f"{where}: cannot start {sys.executable}: {exc}") from exc
            record = {
                "format": RECORD_FORMAT,
                "id": replica_id,
                "provider": PROVIDER_NAME,
                "labels": spec.labels,
                "process": proc.to_json(),
                "host": self.settings.host,
                "port": port,
                "log": str(log_path),
                "model": {"pinned_uri": spec.model.pinned_uri, "source": source},
            }
            try:
                self._write_record(record)
            except OSError as exc:
                procs.stop(proc, grace_seconds=2.0)  # never leave a process without a record
                raise ProviderError(
                    f"{where}: cannot write the replica record in {self.records_dir}: {exc}"
                ) from exc
        return self._handle(record)

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        """ALIVE only while the handle's (pid, start time) is that very process, not a zombie."""
        proc = self._process(handle)
        if procs.is_running(proc):
            return ReplicaStatus(handle, Liveness.ALIVE)
        return ReplicaStatus(handle, Liveness.DEAD, self._death_reason(handle, proc))

    def stop_replica(self, handle: ReplicaHandle, grace_seconds: float) -> None:
        """Stop the process group (by identity), drop the record, keep the log. Idempotent."""
        proc = self._process(handle)
        procs.stop(proc, grace_seconds)
        if procs.is_running(proc):
            raise ProviderError(
                f"replica {handle.id}: process {proc.pid} survived SIGTERM and SIGKILL"
            )
        with exclusive(self._lock_path):
            record_path = self.records_dir / f"{handle.id}.json"
            with contextlib.suppress(FileNotFoundError):
                record_path.unlink()
            log_path = self._log_path(handle)
            stopped = log_path.with_name(f"{handle.id}.stopped.log")
            if log_path.exists():
                os.replace(log_path, stopped)

    def list_owned(self) -> Sequence[ReplicaHandle]:
        """Every recorded replica of this project, alive or dead, sorted by id."""
        handles = []
        for record in self._read_records():
            if record.get("labels", {}).get("declare.project") != self.context.project:
                continue
            handles.append(self._handle(record))
        return handles

    def logs(self, handle: ReplicaHandle, tail: int = 50) -> str:
        """The last `tail` lines of the replica's log (also after it was stopped)."""
        log_path = self._log_path(handle)
        if not log_path.exists():
            log_path = log_path.with_name(f"{handle.id}.stopped.log")
        return procs.log_tail(log_path, tail)

    # -- internals --------------------------------------------------------------------------

    def _handle(self, record: Mapping[str, Any]) -> ReplicaHandle:
        labels = dict(record["labels"])
        process = record["process"]
        return ReplicaHandle(
            id=record["id"],
            provider=PROVIDER_NAME,
            endpoint=labels["declare.endpoint"],
            entity=labels["declare.entity"],
            generation=labels["declare.generation"],
            url=f"http://{record['host']}:{record['port']}",
            data={
                "pid": int(process["pid"]),
                "start_time": int(process["start_time"]),
                "port": int(record["port"]),
                "log": record["log"],
                "labels": labels,
                "model_uri": record["model"]["pinned_uri"],
            },
        )

    def _process(self, handle: ReplicaHandle) -> procs.ProcessId:
        if handle.provider != PROVIDER_NAME:
            raise ProviderError(
                f"replica {handle.id} belongs to provider {handle.provider!r}, not 'local'"
            )
        try:
            return procs.ProcessId.from_json(handle.data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(
                f"replica {handle.id}: its handle has no process identity (pid, start_time)"
            ) from exc

    def _log_path(self, handle: ReplicaHandle) -> Path:
        recorded = handle.data.get("log")
        return Path(recorded) if recorded else self.logs_dir / f"{handle.id}.log"

    def _death_reason(self, handle: ReplicaHandle, proc: procs.ProcessId) -> str:
        now = procs.start_time_of(proc.pid)
        if now is not None and now != proc.start_time:
            reason = f"process {proc.pid} exited; that PID now belongs to another process"
        else:
            reason = f"process {proc.pid} exited"
        error = self._last_error_line(handle)
        return f"{reason}: {error}" if error else reason

    def _last_error_line(self, handle: ReplicaHandle) -> str:
        lines = self.logs(handle, tail=200).splitlines()
        for line in reversed(lines):
            text = line.strip()
            if _ERROR_LINE.match(text) and not _LAUNCHER_LINE.match(text):
                return text[:300]
        return ""

    def _new_id(self, spec: ReplicaSpec, taken: set[str]) -> str:
        while True:
            candidate = sanitize_id(f"{spec.endpoint}-{spec.entity}-{secrets.token_hex(3)}")
            if candidate not in taken:
                return candidate

    def _read_records(self) -> list[dict[str, Any]]:
        if not self.records_dir.is_dir():
            return []
        records = []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
                    raise ValueError("not a replica record of this declare version")
                for key in ("id", "labels", "process", "host", "port", "log", "model"):
                    if key not in record:
                        raise ValueError(f"no {key!r}")
            except FileNotFoundError:
                continue  # stopped while we listed
            except (OSError, ValueError) as exc:
                raise ProviderError(
                    f"local replica record {path} is unreadable ({exc}); if its process is "
                    "gone, delete the file"
                ) from exc
            records.append(record)
        return records

    def _write_record(self, record: Mapping[str, Any]) -> None:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        path = self.records_dir / f"{record['id']}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
