"""How the local provider launches one replica: the checks before, the command, its environment.

Two servers (`providers.local.server`): `declare` (the default), `python -m declare.serve
--model <model> --host HOST --port PORT --workers WORKERS [batching options]`, declare's own
(one process, or WORKERS forked after the model loaded); `mlflow`, `python -m mlflow models
serve -m <model> -h HOST -p PORT --env-manager local -w WORKERS` (the MLflow launcher and the
`uvicorn` child it starts).

Two launchers (`providers.local.launcher` in declare.yaml):

- `exec`: that command, started with the interpreter declare runs under (the model
  environment's with `providers.local.environments: per_model`), detached in its own
  session (its process group holds every process of the replica), with output appended to
  its log.
- `fork` (the default): the same server, forked by the state folder's fork server
  (`providers.local.forkclient`, `providers.local.forkserver`), which has MLflow, uvicorn and
  the model's libraries imported already; the child is in its own session too, and runs
  what the command would run (`providers.local.forkchild`). When the fork server cannot
  fork it (not running yet, a refusal, no answer, a model source that is not a local path),
  the replica is started by `exec`, and its log says why (`Launch.note`).

Either way its environment is declare's own without other replicas' secrets, plus the
model's MLflow settings, the user's variables and DECLARE_PROJECT / DECLARE_REPLICA_ID.

What it does not do: choose the replica id or port, write the replica record
(`providers.local.records`), stop the process (`declare.procs`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from declare import procs
from declare.environment import replica_environment
from declare.errors import ProviderError
from declare.model import ReplicaSpec
from providers._shared import is_local_source, local_source_path
from providers.local.forkclient import ForkServerClient, ForkUnavailable

__all__ = ["Launch", "model_source"]


def model_source(spec: ReplicaSpec, where: str) -> str:
    """What `-m` gets for `spec`: ProviderError for GPU workloads and missing model files."""
    if spec.workload_type != "CPU":
        raise ProviderError(
            f"{where}: workload_type {spec.workload_type} needs a GPU, and the local "
            "provider runs CPU replicas only; use the docker or gpu-hosts provider for "
            "GPU workloads"
        )
    source = spec.model.source or spec.model.pinned_uri
    if not source:
        raise ProviderError(f"{where}: the resolved model has neither a source nor a URI")
    if is_local_source(source) and not local_source_path(source).exists():
        raise ProviderError(
            f"{where}: model {spec.model.describe()} has no files at {source}; "
            "was it deleted since the plan was made?"
        )
    return source


@dataclass(frozen=True)
class Launch:
    """One replica's scoring server as it is to be started."""

    spec: ReplicaSpec
    replica_id: str
    source: str
    host: str
    port: int
    workers: int
    log_path: Path
    pass_env: tuple[str, ...] = ()  # providers.local.pass_env
    server: str = "declare"  # providers.local.server
    # The model environment's interpreter (providers.local.envs); None: declare's own.
    python: Path | None = None

    @property
    def interpreter(self) -> str:
        return str(self.python) if self.python is not None else sys.executable

    def server_args(self) -> list[str]:
        """declare.serve's options beyond model, host, port and workers (batching)."""
        batching = self.spec.batching
        if batching is None:
            return []
        return [
            "--max-batch-size", str(batching.max_batch_size),
            "--max-delay-ms", f"{batching.max_delay_ms:g}",
        ]  # fmt: skip

    def argv(self) -> list[str]:
        if self.server == "declare":
            return [
                self.interpreter, "-m", "declare.serve",
                "--model", self.source,
                "--host", self.host,
                "--port", str(self.port),
                "--workers", str(self.workers),
                *self.server_args(),
            ]  # fmt: skip
        return [
            self.interpreter, "-m", "mlflow", "models", "serve",
            "-m", self.source,
            "-h", self.host,
            "-p", str(self.port),
            "--env-manager", "local",
            "-w", str(self.workers),
        ]  # fmt: skip

    def command(self) -> str:
        """The command `exec` runs, as a log line names it."""
        if self.server == "declare":
            return "python -m declare.serve"
        return "mlflow models serve"

    def _own_env(self) -> dict[str, str]:
        """What this replica sets on top of declare's environment."""
        return {
            **self.spec.model_env,
            **self.spec.environment_vars,
            # Lets an operator find declare's processes with `grep` in /proc/*/environ.
            "DECLARE_PROJECT": self.spec.project,
            "DECLARE_REPLICA_ID": self.replica_id,
        }

    def env(self) -> dict[str, str]:
        """The allow-listed part of declare's environment (declare.environment: no secret,
        no gateway token, no state DSN), then this replica's own variables (its secrets
        come in environment_vars)."""
        allowed = replica_environment(os.environ, self.pass_env)
        if self.python is None:
            return procs.venv_path_env({**allowed, **self._own_env()})
        # In its model environment: that virtualenv's bin first on PATH (MLflow's launcher
        # runs `uvicorn` by name), and nothing of declare's own Python path.
        allowed.pop("PYTHONPATH", None)
        bindir = str(self.python.parent)
        parts = [p for p in allowed.get("PATH", os.defpath).split(os.pathsep) if p != bindir]
        allowed["PATH"] = os.pathsep.join([bindir, *parts])
        allowed["VIRTUAL_ENV"] = str(self.python.parent.parent)
        return {**allowed, **self._own_env()}

    def start(self, project_dir: Path, where: str) -> procs.ProcessId:
        """Start it detached (in `project_dir` when it exists); ProviderError if it cannot."""
        cwd = project_dir if project_dir.is_dir() else None
        try:
            return procs.start_detached(self.argv(), self.log_path, self.env(), cwd=cwd)
        except OSError as exc:
            raise ProviderError(f"{where}: cannot start {self.interpreter}: {exc}") from exc

    def fork_message(self, project_dir: Path) -> dict[str, Any]:
        """The fork server's request for this replica (providers.local.forkproto)."""
        return {
            "replica_id": self.replica_id,
            "source": self.source,
            "host": self.host,
            "port": self.port,
            "workers": self.workers,
            "env": self.env(),
            "replica_keys": sorted(self._own_env()),
            "log": str(self.log_path),
            "cwd": str(project_dir if project_dir.is_dir() else Path.cwd()),
            "server": self.server,
            "server_args": self.server_args(),
        }

    def fork(
        self,
        server: ForkServerClient,
        project_dir: Path,
        on_started: Callable[[procs.ProcessId], None] = lambda _: None,
    ) -> procs.ProcessId:
        """Fork it from `server` (`on_started` before the fork server lets go of it);
        ForkUnavailable saying why when it cannot be."""
        if not is_local_source(self.source):
            raise ForkUnavailable(f"the model source {self.source} is not a local path")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return server.fork(self.fork_message(project_dir), on_started)

    def note(self, text: str) -> None:
        """Append one `[declare]` line to the replica's log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_path, "a") as log:
            log.write(f"[declare] {stamp} replica {self.replica_id}: {text}\n")

    def start_by(
        self,
        launcher: str,
        server: ForkServerClient,
        project_dir: Path,
        where: str,
        on_started: Callable[[procs.ProcessId], None] = lambda _: None,
    ) -> procs.ProcessId:
        """Start it with `launcher` (fork | exec); a fork that cannot be falls back to exec.
        `on_started(process)` runs once it exists (the provider records it): for a fork,
        before the fork server lets go of the child, so no fork outlives an unrecorded
        provider; for exec, right after the start (what it raises stops the process)."""
        if launcher == "fork":
            try:
                return self.fork(server, project_dir, on_started)
            except ForkUnavailable as exc:
                self.note(f"not forked: {exc}; started by `{self.command()}` instead")
            except OSError as exc:
                self.note(f"not forked ({exc}); started by `{self.command()}` instead")
        proc = self.start(project_dir, where)
        try:
            on_started(proc)
        except BaseException:
            procs.stop(proc, grace_seconds=2.0)  # never leave a process without a record
            raise
        return proc
