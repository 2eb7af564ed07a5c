"""How the local provider launches one replica: the checks before, the command, its environment.

A replica is `python -m mlflow models serve -m <model> -h HOST -p PORT --env-manager local
-w WORKERS`, started with the interpreter declare runs under, detached in its own session (so
its process group holds the MLflow launcher and the `uvicorn` child it starts), with output
appended to its log. Its environment is declare's own without other replicas' secrets, plus
the model's MLflow settings, the user's variables and DECLARE_PROJECT / DECLARE_REPLICA_ID.

What it does not do: choose the replica id or port, write the replica record
(`providers.local.records`), stop the process (`declare.procs`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from declare import procs
from declare.errors import ProviderError
from declare.model import ReplicaSpec
from declare.secrets import without_secrets
from providers._shared import is_local_source, local_source_path

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

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "models", "serve",
            "-m", self.source,
            "-h", self.host,
            "-p", str(self.port),
            "--env-manager", "local",
            "-w", str(self.workers),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return procs.venv_path_env(
            {
                # Secrets of other replicas stay out; this one's come in environment_vars.
                **without_secrets(os.environ),
                **self.spec.model_env,
                **self.spec.environment_vars,
                # Lets an operator find declare's processes with `grep` in /proc/*/environ.
                "DECLARE_PROJECT": self.spec.project,
                "DECLARE_REPLICA_ID": self.replica_id,
            }
        )

    def start(self, project_dir: Path, where: str) -> procs.ProcessId:
        """Start it detached (in `project_dir` when it exists); ProviderError if it cannot."""
        cwd = project_dir if project_dir.is_dir() else None
        try:
            return procs.start_detached(self.argv(), self.log_path, self.env(), cwd=cwd)
        except OSError as exc:
            raise ProviderError(f"{where}: cannot start {sys.executable}: {exc}") from exc
