"""The local provider: each replica is a detached scoring server on loopback.

A replica is declare's own scoring server (`python -m declare.serve`, `server: declare`, the
default; it answers what MLflow's answers) or MLflow's as `mlflow models serve ...
--env-manager local` runs it (`server: mlflow`), in its own session, output appended to
`state_dir/local/logs/<id>.log` (`providers.local.launch`): forked by the state folder's fork
server (`launcher: fork`, the default; started lazily, see `providers.local.forkclient`), or
started as that very command with declare's own interpreter (`launcher: exec`, and whenever
a fork cannot be had). Request and response formats are MLflow's either way. The process
outlives declare. `start_forkserver` / `stop_forkserver` start it ahead of need and stop
it; it also exits by itself when idle with no replica for an hour, or when the state folder
is removed.

Each replica has a record, `state_dir/local/replicas/<replica id>.json`
(`providers.local.records`), so `list_owned()` finds every replica without the state file. A
replica is ALIVE only while its recorded (pid, start time) is that very process and not a
zombie: a PID the kernel reused is never mistaken for a replica, and `stop_replica` never
signals it.

Stopping signals the whole process group (SIGTERM, grace, SIGKILL), removes the record and
keeps the log, renamed to `<replica id>.stopped.log` (with a sidecar saying whose it is:
`stopped_logs` lists them by endpoint). `log_size` / `log_since` read a running replica's
log on as it grows (`declare logs --follow`). Each handle names its log file, and says
that nothing was built, for the gateway (`declare.model.logs`), which reads them without
this provider.

Model environments (`providers.local.environments`): `shared` (the default) runs every
replica in declare's own interpreter (`--env-manager local`: the model must load there);
`per_model` gives each model environment its own virtualenv, built by `build` and shown in
the plan as a build (`providers.local.envs`), checked at plan time (`build_info` names what
a model requires that this host cannot give), and replicas start by `exec` in it.

What it does not do: readiness (the core probes `/invocations`), GPUs (`workload_type` other
than CPU is refused: GPU workloads need the docker or gpu-hosts provider), removing model
environments, and restarting dead replicas (that is drift, seen by `status`, repaired by
the next apply).
Linux only (/proc). Settings: `providers.local.settings`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from declare import procs
from declare.errors import ProviderError
from declare.model import EntitySpec, ReplicaHandle, ReplicaSpec, ResolvedModel
from declare.provider import BuildInfo, Liveness, ProviderContext, ReplicaStatus, StoppedLog
from providers._shared import (
    DEATH_LOG_LINES,
    check_owner,
    death_reason,
    new_replica_id,
    pick_port,
    where_of,
)
from providers.local import envs
from providers.local.forkclient import ForkServerClient
from providers.local.launch import Launch, model_source
from providers.local.records import PROVIDER_NAME, ReplicaRecord, ReplicaRecords
from providers.local.settings import LocalSettings

__all__ = ["LocalProvider"]

_BATCHING_NEEDS_DECLARE = (
    "batching needs declare's replica server, and providers.local.server is mlflow in "
    "declare.yaml: set it to declare (the default) or remove `batching`"
)


def _missing(settings: LocalSettings) -> list[str]:
    """What the local provider needs with `settings` and this host lacks."""
    missing: list[str] = []
    if not Path("/proc/self/stat").exists():
        missing.append("/proc (the local provider runs on Linux only)")
    needed = ("mlflow", "httptools") if settings.server == "declare" else ("mlflow", "uvicorn")
    for module in needed:
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python package {module!r} in {sys.executable}")
    path = procs.venv_path_env(os.environ)["PATH"]
    if settings.server == "mlflow" and shutil.which("uvicorn", path=path) is None:
        missing.append(
            f"a 'uvicorn' command on PATH or beside {sys.executable} "
            "(MLflow's scoring server runs it by name)"
        )
    if settings.environments == "per_model" and envs.find_uv() is None:
        missing.append(
            "uv (the Python package `uv` or a `uv` on PATH), which builds the model "
            "environments of providers.local.environments: per_model"
        )
    return missing


class LocalProvider:
    """Replicas as detached scoring-server processes on loopback (see module doc)."""

    name = PROVIDER_NAME

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.settings = LocalSettings.parse(context.settings)
        self.replica_concurrency = self.settings.replica_concurrency
        self.records = ReplicaRecords(context.state_dir / PROVIDER_NAME)
        self.records_dir = self.records.records_dir
        self.logs_dir = self.records.logs_dir
        self.forkserver = ForkServerClient(context.state_dir / PROVIDER_NAME)
        per_model = self.settings.environments == "per_model"
        envs_dir = context.state_dir / PROVIDER_NAME / "envs"
        self.environments = envs.ModelEnvironments(envs_dir) if per_model else None

    # -- checks and builds ------------------------------------------------------------------

    def check(self) -> None:
        """Raise ProviderError naming what is missing: /proc, mlflow, the server's packages."""
        missing = _missing(self.settings)
        if missing:
            raise ProviderError("local provider cannot run replicas: missing " + "; ".join(missing))

    def entity_problems(self, entity: EntitySpec) -> list[tuple[str, str]]:
        """`declare.provider.EntityChecks`: batching needs declare's replica server."""
        if entity.batching is not None and self.settings.server != "declare":
            return [("batching", _BATCHING_NEEDS_DECLARE)]
        return []

    def build_info(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """`shared`: nothing to build (declare's own interpreter). `per_model`: the model's
        environment, checked now when not built yet (`envs.ModelEnvironments`)."""
        if self.environments is None:
            return BuildInfo(key=model.env_hash, needed=False, cached=True)
        return self.environments.build_info(model)

    def build(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """`per_model`: build the model's environment unless it is built; `shared`:
        nothing, the same answer as `build_info`."""
        if self.environments is None:
            return self.build_info(model, workload_type)
        return self.environments.build(model)

    # -- replicas ---------------------------------------------------------------------------

    def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Start one scoring server, record it, and return at once (it is not ready yet)."""
        where = where_of(spec)
        if spec.batching is not None and self.settings.server != "declare":
            raise ProviderError(f"{where}: {_BATCHING_NEEDS_DECLARE}")
        source = model_source(spec, where)
        host = self.settings.host
        python, launcher = None, self.settings.launcher
        if self.environments is not None:
            # The fork server holds declare's own environment: a model's starts by exec.
            python, launcher = self.environments.interpreter(spec.model, where), "exec"
        with self.records.locked():
            records = self.records.read()
            replica_id = new_replica_id(spec, {r.id for r in records})
            port = pick_port(host, frozenset(r.port for r in records), where)
            log_path = self.records.log_path(replica_id)
            launch = Launch(
                spec,
                replica_id,
                source,
                host,
                port,
                self.settings.workers,
                log_path,
                self.settings.pass_env,
                self.settings.server,
                python,
            )
            written: list[ReplicaRecord] = []

            def record_it(proc: procs.ProcessId) -> None:
                record = ReplicaRecord(
                    id=replica_id,
                    labels=spec.labels,
                    process=proc,
                    host=host,
                    port=port,
                    log=str(log_path),
                    pinned_uri=spec.model.pinned_uri,
                    source=source,
                )
                try:
                    self.records.write(record)
                except OSError as exc:
                    raise ProviderError(
                        f"{where}: cannot write the replica record in {self.records_dir}: {exc}"
                    ) from exc
                written.append(record)

            # Recorded once the process exists, before a fork server lets go of a child.
            launch.start_by(
                launcher,
                self.forkserver,
                self.context.project_dir,
                where,
                on_started=record_it,
            )
            (record,) = written
        return record.handle()

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
        with self.records.locked():
            self.records.forget(handle)

    def list_owned(self) -> Sequence[ReplicaHandle]:
        """Every recorded replica of this project, alive or dead, sorted by id."""
        return [r.handle() for r in self.records.read() if r.project == self.context.project]

    def logs(self, handle: ReplicaHandle, tail: int = 50) -> str:
        """The last `tail` lines of the replica's log (also after it was stopped)."""
        return procs.log_tail(self._live_log(handle), tail)

    def stopped_logs(self, endpoint: str, entity: str | None, tail: int) -> list[StoppedLog]:
        """`declare.provider.StoppedLogs`: the kept logs of this project's stopped replicas
        of `endpoint` (and `entity`), newest stop first."""
        return [
            StoppedLog(r.id, r.entity, r.stopped_at, procs.log_tail(r.log, tail))
            for r in self.records.stopped()
            if r.project == self.context.project
            and r.endpoint == endpoint
            and (entity is None or r.entity == entity)
        ]

    def log_size(self, handle: ReplicaHandle) -> int:
        """`declare.provider.LogFollowing`: the size of the replica's log now."""
        try:
            return self._live_log(handle).stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, handle: ReplicaHandle, offset: int) -> tuple[str, int]:
        """`declare.provider.LogFollowing`: the whole lines written after byte `offset`."""
        return procs.log_since(self._live_log(handle), offset)

    # -- the fork server ---------------------------------------------------------------------

    def start_forkserver(self, wait_seconds: float = 0.0) -> bool:
        """Start the fork server now if it is not running; True once it answers (waits up to
        `wait_seconds`). For callers that know replicas will be wanted soon."""
        if wait_seconds <= 0:
            self.forkserver.ensure()
            return self.forkserver.ping()
        return self.forkserver.wait_ready(wait_seconds)

    def stop_forkserver(self, grace_seconds: float = 5.0) -> None:
        """Stop this state folder's fork server; its replicas go on. Idempotent."""
        self.forkserver.stop(grace_seconds)

    def stop_helpers(self) -> None:
        """`declare.provider.HelperProcesses`: the fork server, after a destroy."""
        self.stop_forkserver()

    # -- internals --------------------------------------------------------------------------

    def _process(self, handle: ReplicaHandle) -> procs.ProcessId:
        check_owner(handle, PROVIDER_NAME)
        try:
            return procs.ProcessId.from_json(handle.data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(
                f"replica {handle.id}: its handle has no process identity (pid, start_time)"
            ) from exc

    def _live_log(self, handle: ReplicaHandle) -> Path:
        """The replica's log: its running name, or its kept name once it was stopped."""
        check_owner(handle, PROVIDER_NAME)
        path = self.records.log_of(handle)
        return path if path.exists() else self.records.stopped_log_of(handle)

    def _death_reason(self, handle: ReplicaHandle, proc: procs.ProcessId) -> str:
        now = procs.start_time_of(proc.pid)
        if now is not None and now != proc.start_time:
            reason = f"process {proc.pid} exited; that PID now belongs to another process"
        else:
            reason = f"process {proc.pid} exited"
        return death_reason(reason, self.logs(handle, tail=DEATH_LOG_LINES))
