"""Replica containers: what one is created with, and finding, inspecting, stopping it.

A replica container runs `mlflow models serve -m /model --env-manager local -w 1` with **host
networking** on its own loopback port (engines here run with `--bridge=none`; no traffic
ever goes to a container address). It carries labels naming the provider, project,
endpoint, served entity, generation, replica index, replica id, port, model and image, so
the project's replicas are found on the engine without the state file; it has a restart
policy (default unless-stopped), the CPU and memory limits of its workload type and, for a
GPU workload, a device request (`providers.docker.workloads`); an init as PID 1 passes
SIGTERM on to the server.

Stopping is `docker stop` (SIGTERM, the grace period, SIGKILL); the container's log is then
kept in `state_dir/docker/logs/<replica id>.log`, with a sidecar saying whose it is
(`providers._shared.record_stopped`; `stopped_logs` lists them), and the container removed.

What it does not do: choose the image (`providers.docker.image`), place the model's
artifacts (`providers.docker.artifacts`), or decide when to start or stop (the core).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from declare import procs
from declare.errors import ProviderError
from declare.model import BuildLog, LogSource, ReplicaHandle, ReplicaSpec
from declare.provider import StoppedLog
from providers._shared import (
    DEATH_LOG_LINES,
    check_owner,
    death_reason,
    handle_from_labels,
    record_stopped,
    sanitize_id,
    stopped_records,
)
from providers.docker.artifacts import MODEL_DIR, model_tar
from providers.docker.engine import Engine
from providers.docker.errors import engine_errors, found, gone, quietly
from providers.docker.settings import DockerSettings
from providers.docker.workloads import Resources

__all__ = [
    "LABEL_IMAGE",
    "LABEL_MODEL",
    "LABEL_PORT",
    "LABEL_PROJECT",
    "LABEL_PROVIDER",
    "LABEL_REPLICA",
    "PROVIDER_NAME",
    "SERVE",
    "Containers",
    "container_config",
    "container_name",
]

PROVIDER_NAME = "docker"
LABEL_PROVIDER = "declare.provider"
LABEL_PROJECT = "declare.project"
LABEL_REPLICA = "declare.replica"
LABEL_PORT = "declare.port"
LABEL_MODEL = "declare.model"
LABEL_IMAGE = "declare.image"
# MLflow's scoring server, one worker; host and port are added per replica.
SERVE = ("mlflow", "models", "serve", "-m", MODEL_DIR, "--env-manager", "local", "-w", "1")
SPEC_LABELS = (
    "declare.project",
    "declare.endpoint",
    "declare.entity",
    "declare.generation",
    "declare.index",
)


# The longest container name declare gives: `declare-` + a project name (at most 63) + `-` +
# a replica id (at most 128, declare.model.names) fit in it whole.
CONTAINER_NAME_MAX = 200


def container_name(project: str, replica_id: str) -> str:
    """`declare-<project>-<replica id>`, sanitized; ProviderError when it is longer than
    CONTAINER_NAME_MAX (cutting it would cut the unique end of the replica id)."""
    name = sanitize_id(f"declare-{project}-{replica_id}")
    if len(name) > CONTAINER_NAME_MAX:
        raise ProviderError(
            f"replica {replica_id}: its container name would be {len(name)} characters, over "
            f"{CONTAINER_NAME_MAX}: shorten the project ({project!r}), endpoint or entity name"
        )
    return name


def container_config(
    spec: ReplicaSpec,
    replica_id: str,
    port: int,
    *,
    name: str,
    image_tag: str,
    settings: DockerSettings,
    limits: Resources,
) -> dict[str, Any]:
    """The arguments of `containers.create` for one replica (what the engine is sent)."""
    labels = {
        **spec.labels,
        LABEL_PROVIDER: PROVIDER_NAME,
        LABEL_REPLICA: replica_id,
        LABEL_PORT: str(port),
        LABEL_MODEL: spec.model.pinned_uri,
        LABEL_IMAGE: image_tag,
    }
    restart: dict[str, Any] = {"Name": settings.restart_policy}
    if settings.restart_policy == "on-failure":
        restart["MaximumRetryCount"] = 5
    config: dict[str, Any] = {
        "image": image_tag,
        "name": name,
        "command": [*SERVE, "-h", settings.host, "-p", str(port)],
        "network_mode": "host",
        "labels": labels,
        "environment": {
            **spec.environment_vars,
            "DECLARE_PROJECT": spec.project,
            "DECLARE_REPLICA_ID": replica_id,
        },
        "restart_policy": restart,
        "nano_cpus": limits.nano_cpus,
        "mem_limit": limits.memory_bytes,
        "stop_signal": "SIGTERM",
        # An init as PID 1 passes SIGTERM on: MLflow's launcher as PID 1 would ignore it,
        # and every stop would wait out the grace period and end in SIGKILL.
        "init": True,
        "detach": True,
    }
    if limits.gpus:
        import docker.types

        config["device_requests"] = [
            docker.types.DeviceRequest(**req) for req in limits.device_requests()
        ]
    return config


def taken(containers: Iterable[Any]) -> tuple[set[str | None], frozenset[int]]:
    """The replica ids and ports that labelled `containers` hold."""
    labels = [c.labels for c in containers]
    ids = {lab.get(LABEL_REPLICA) for lab in labels}
    ports = frozenset(int(p) for lab in labels if (p := lab.get(LABEL_PORT, "")).isdigit())
    return ids, ports


def name_of(handle: ReplicaHandle) -> str:
    return str(handle.data.get("container") or handle.id)


class Containers:
    """The replica containers of `project` on one engine, and the logs kept of removed ones."""

    def __init__(
        self, engine: Engine, project: str, host: str, logs_dir: Path, builds_dir: Path
    ) -> None:
        self.engine = engine
        self.project = project
        self.host = host  # the loopback address replicas listen on
        self.logs_dir = logs_dir
        self.builds_dir = builds_dir  # the build logs, `<image key>.log`

    def owned(self, all_projects: bool) -> list[Any]:
        """Every container of this provider (of this project unless `all_projects`)."""
        filters = [f"{LABEL_PROVIDER}={PROVIDER_NAME}"]
        if not all_projects:
            filters.append(f"{LABEL_PROJECT}={self.project}")
        client = self.engine.client()
        with engine_errors(f"cannot list containers on {self.engine.url}"):
            listed: list[Any] = client.containers.list(
                all=True, filters={"label": filters}, ignore_removed=True
            )
        return listed

    def get(self, handle: ReplicaHandle) -> Any:
        """The handle's container, or None when it no longer exists."""
        check_owner(handle, PROVIDER_NAME)
        container_id = handle.data.get("container_id")
        if not isinstance(container_id, str) or not container_id:
            raise ProviderError(f"replica {handle.id}: its handle has no container id")
        client = self.engine.client()
        with engine_errors(f"replica {handle.id}: cannot inspect its container"):
            return found(lambda: client.containers.get(container_id))

    def create(self, config: Mapping[str, Any], where: str) -> Any:
        client = self.engine.client()
        with engine_errors(f"{where}the engine refused the container"):
            return client.containers.create(**config)

    def start(self, container: Any, name: str, model_dir: Path | None, where: str) -> None:
        """Start `container`, named `name` (copying `model_dir` into it first, unless None);
        on failure, remove it and raise ProviderError."""
        try:
            with engine_errors(f"{where}container {name} did not start"):
                if model_dir is not None:
                    container.put_archive("/", model_tar(model_dir))
                container.start()
                container.reload()
        except ProviderError:
            with quietly():
                container.remove(force=True)
            raise

    def stop(self, handle: ReplicaHandle, grace_seconds: float) -> None:
        """docker stop (SIGTERM, grace, SIGKILL), keep the log, remove it. Idempotent."""
        container = self.get(handle)
        if container is None:
            return
        with engine_errors(f"replica {handle.id}: cannot stop it"):
            if gone(lambda: container.stop(timeout=max(1, math.ceil(grace_seconds)))):
                return
        self._save_log(handle, container)
        with engine_errors(f"replica {handle.id}: cannot remove its container"):
            gone(lambda: container.remove(force=True))

    def handle(self, attrs: Mapping[str, Any]) -> ReplicaHandle:
        """The handle of the container `attrs` describe (from its labels)."""
        labels = dict((attrs.get("Config") or {}).get("Labels") or {})
        port = int(labels[LABEL_PORT])
        data = {
            "container_id": str(attrs["Id"]),
            "container": str(attrs.get("Name", "")).lstrip("/"),
            "port": port,
            "image": labels.get(LABEL_IMAGE, ""),
            "model_uri": labels.get(LABEL_MODEL, ""),
            "labels": {k: labels[k] for k in SPEC_LABELS if k in labels},
        }
        return handle_from_labels(
            PROVIDER_NAME,
            labels[LABEL_REPLICA],
            labels,
            self.host,
            port,
            data,
            self.log_source(data["container_id"], data["image"]),
        )

    def log_source(self, container_id: str, image_tag: str) -> LogSource:
        """Where the gateway reads a replica's log (the engine's API) and the build log of
        its image (`<builds_dir>/<image key>.log`, the key being the tag's; the file is
        missing when the image was on the engine before this project needed it)."""
        key = image_tag.rsplit(":", 1)[-1] if image_tag else ""
        build = BuildLog(file=str(self.builds_dir / f"{key}.log")) if key else None
        return LogSource(engine=self.engine.api_url, container=container_id, build=build)

    def logs(self, handle: ReplicaHandle, tail: int = 50) -> str:
        """The container's last `tail` log lines (the kept log once it was removed)."""
        container = self.get(handle)
        if container is not None:
            with quietly():
                raw: bytes = container.logs(tail=tail)
                return raw.decode(errors="replace").rstrip("\n")
        return procs.log_tail(self._log_path(handle), tail)

    def death_reason(self, handle: ReplicaHandle, state: Mapping[str, Any]) -> str:
        """Why the container of `handle`, in `state`, does not serve; with its log's error."""
        code = state.get("ExitCode")
        if state.get("Restarting"):
            reason = f"container {name_of(handle)} is restarting after exit code {code}"
        else:
            reason = f"container {name_of(handle)} is {state.get('Status', 'not running')}"
            reason += f" (exit code {code})"
        if state.get("OOMKilled"):
            reason += ", killed for exceeding its memory limit"
        return death_reason(reason, self.logs(handle, tail=DEATH_LOG_LINES))

    def _log_path(self, handle: ReplicaHandle) -> Path:
        return self.logs_dir / f"{handle.id}.log"

    def _save_log(self, handle: ReplicaHandle, container: Any) -> None:
        with quietly():
            raw: bytes = container.logs()
            path = self._log_path(handle)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
            record_stopped(self.logs_dir, handle)

    def stopped_logs(self, endpoint: str, entity: str | None, tail: int) -> list[StoppedLog]:
        """The kept logs of this project's removed replicas of `endpoint` (and `entity`),
        newest first: those saved at a stop, each with its sidecar."""
        return [
            StoppedLog(r.id, r.entity, r.stopped_at, procs.log_tail(r.log, tail))
            for r in stopped_records(self.logs_dir, lambda rid: self.logs_dir / f"{rid}.log")
            if r.project == self.project
            and r.endpoint == endpoint
            and (entity is None or r.entity == entity)
        ]
