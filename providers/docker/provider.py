"""The docker provider: each replica is a container running MLflow's scoring server.

A replica is a container of the model environment's image (`image`, built by `build`) with
host networking on its own loopback port, labelled so that `list_owned()` finds every
replica of the project on the engine without the state file (`containers`); the model's
artifacts are mounted read-only at /model, or copied in for an engine on another machine
(`artifacts`). Stopping is graceful: the core drains the replica first; then `docker stop`,
the container's log is kept in `state_dir/docker/logs/<id>.log` (with a sidecar:
`stopped_logs` lists them by endpoint), and the container is removed. `prune_images()`
removes the images this project's replicas used that no container on the engine uses any
more (`declare destroy --prune-images`, from `image_record`). Each handle names where its
log is for the gateway (the engine's URL, the container id, the image's build log:
`declare.model.logs`), which reads it there without this provider.

This module only puts those parts together behind the Provider Protocol; the engine's
errors become ProviderErrors in one place (`errors`).

What it does not do: readiness (the core probes /invocations over HTTP), pulling images
other than the base image, scheduling across several engines (the gpu-hosts provider),
micro-batching: MLflow's scoring server cannot batch, so a replica whose served entity has
`batching` is refused when asked to start (`refuse_batching`; the Provider Protocol has no
plan-time check of a served entity's settings), following a running container's log
(`declare logs --follow` shows it once).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from declare.errors import ProviderError
from declare.model import EntitySpec, ReplicaHandle, ReplicaSpec, ResolvedModel
from declare.provider import BuildInfo, Liveness, ProviderContext, ReplicaStatus, StoppedLog
from providers._shared import exclusive, new_replica_id, pick_port, where_of
from providers.docker import image as images
from providers.docker.artifacts import ModelArtifacts, model_mounts
from providers.docker.build import build_image
from providers.docker.containers import (
    LABEL_IMAGE,
    LABEL_PROVIDER,
    PROVIDER_NAME,
    Containers,
    container_config,
    container_name,
    name_of,
    taken,
)
from providers.docker.engine import Engine
from providers.docker.errors import engine_errors, found
from providers.docker.image_record import ImageRecord
from providers.docker.settings import DockerSettings
from providers.docker.workloads import resources

__all__ = ["PROVIDER_NAME", "DockerProvider", "refuse_batching"]


BATCHING_REFUSED = (
    "batching needs declare's replica server, which the docker provider does not run; "
    "remove `batching` or use the local provider (its server is declare's by default)"
)


def refuse_batching(spec: ReplicaSpec) -> None:
    """ProviderError when `spec` asks for micro-batching, which MLflow's server cannot do."""
    if spec.batching is not None:
        raise ProviderError(
            f"served entity {spec.entity} of endpoint {spec.endpoint}: {BATCHING_REFUSED}"
        )


class DockerProvider:
    """Replicas as containers on one Docker engine (see the module docstring)."""

    name = PROVIDER_NAME

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.settings = DockerSettings.parse(context.settings, context.project_dir)
        root = context.state_dir / PROVIDER_NAME
        self.builds_dir = root / "builds"
        self.logs_dir = root / "logs"
        self._lock_path = root / ".lock"
        self.engine = Engine(self.settings.engine)
        self.containers = Containers(
            self.engine, context.project, self.settings.host, self.logs_dir, self.builds_dir
        )
        self.artifacts = ModelArtifacts(root / "models")
        self.images = ImageRecord(root / "images.json", self._lock_path)
        self.replica_concurrency = self.settings.replica_concurrency
        self._plans: dict[str, images.ImagePlan] = {}
        self._plans_lock = threading.Lock()

    def check(self) -> None:
        """Raise ProviderError when the engine is missing or does not answer."""
        self.engine.info()

    def entity_problems(self, entity: EntitySpec) -> list[tuple[str, str]]:
        """`declare.provider.EntityChecks`: containers run MLflow's server, which cannot batch."""
        return [("batching", BATCHING_REFUSED)] if entity.batching is not None else []

    # -- images -----------------------------------------------------------------------------

    def image_plan(self, model: ResolvedModel) -> images.ImagePlan:
        """What image serves `model` (cached per model source for this provider's life)."""
        cache_key = f"{model.source}|{model.env_hash}"
        with self._plans_lock:
            known = self._plans.get(cache_key)
        if known is not None:
            return known
        plan = images.image_plan(
            model,
            base_image=self.settings.base_image,
            python_version=self.settings.python_version,
            image_repo=self.settings.image_repo,
            mlflow_package=self.settings.mlflow_package,
            extra=self.settings.extra_requirements,
            engine_arch=str(self.engine.info().get("Architecture", "x86_64")),
        )
        with self._plans_lock:
            self._plans[cache_key] = plan
        return plan

    def build_info(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """The image for the model's environment; checked at plan time, before any change:
        a GPU workload on an engine without a GPU runtime fails here."""
        self.engine.check_workload(workload_type, f"model {model.describe()}: ")
        plan = self.image_plan(model)
        return BuildInfo(
            key=plan.key, needed=True, cached=self._image_exists(plan.tag), ref=plan.tag
        )

    def build(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """Build the environment image unless its tag exists; the log is kept either way."""
        plan = self.image_plan(model)
        if not self._image_exists(plan.tag):
            build_image(
                self.engine.client(),
                plan,
                self.settings.wheel_cache,
                self.build_log_path(plan),
                labels={LABEL_PROVIDER: PROVIDER_NAME, LABEL_IMAGE: "model-environment"},
            )
        self.images.remember(plan.tag)
        return BuildInfo(key=plan.key, needed=True, cached=True, ref=plan.tag)

    def build_log_path(self, plan: images.ImagePlan) -> Path:
        return self.builds_dir / f"{plan.key}.log"

    def prune_images(self) -> list[str]:
        """Remove the images this project's replicas used that no container uses now."""
        return self.images.prune(self.engine.client())

    def _image_exists(self, tag: str) -> bool:
        client = self.engine.client()
        with engine_errors(f"cannot inspect image {tag}"):
            return found(lambda: client.images.get(tag)) is not None

    # -- replicas ---------------------------------------------------------------------------

    def container_config(self, spec: ReplicaSpec, replica_id: str, port: int) -> dict[str, Any]:
        """The arguments of `containers.create` for one replica (what the engine is sent)."""
        info = self.engine.info()
        limits = resources(
            spec.workload_type,
            self.settings.cpus,
            self.settings.memory_bytes,
            engine_cpus=int(info.get("NCPU") or 0) or None,
            engine_memory=int(info.get("MemTotal") or 0) or None,
        )
        return container_config(
            spec,
            replica_id,
            port,
            name=container_name(self.context.project, replica_id),
            image_tag=self.image_plan(spec.model).tag,
            settings=self.settings,
            limits=limits,
        )

    def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Create and start the container, and return at once (it is not ready yet).
        Refuses a spec with `batching` before anything is made."""
        refuse_batching(spec)
        where = f"{where_of(spec)}: "
        self.engine.check_workload(spec.workload_type, where)
        plan = self.image_plan(spec.model)
        if not self._image_exists(plan.tag):
            raise ProviderError(
                f"{where}image {plan.tag} for {spec.model.describe()} is not on the engine "
                "(removed since the plan was made?); run `declare apply` again to build it"
            )
        model_dir = self.artifacts.folder(spec.model, where)
        with exclusive(self._lock_path):
            taken_ids, taken_ports = taken(self.containers.owned(all_projects=True))
            replica_id = new_replica_id(spec, taken_ids)
            port = pick_port(self.settings.host, taken_ports, where_of(spec))
            config = self.container_config(spec, replica_id, port)
            if self.engine.is_local:
                config["mounts"] = model_mounts(model_dir)
            container = self.containers.create(config, where)
        copied = None if self.engine.is_local else model_dir
        self.containers.start(container, config["name"], copied, where)
        self.images.remember(plan.tag)
        return self.containers.handle(container.attrs)

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        """ALIVE while the handle's container (by its id) runs, or while the engine restarts
        it under a restart policy other than `no`; DEAD with the reason otherwise."""
        container = self.containers.get(handle)
        if container is None:
            return ReplicaStatus(
                handle, Liveness.DEAD, f"container {name_of(handle)} no longer exists"
            )
        state = container.attrs.get("State") or {}
        if state.get("Running") and not state.get("Restarting"):
            return ReplicaStatus(handle, Liveness.ALIVE)
        if state.get("Restarting") and self.settings.restart_policy != "no":
            # The engine restarts it under its restart policy: one restarter, not two.
            return ReplicaStatus(handle, Liveness.ALIVE, "restarting under its restart policy")
        return ReplicaStatus(handle, Liveness.DEAD, self.containers.death_reason(handle, state))

    def stop_replica(self, handle: ReplicaHandle, grace_seconds: float) -> None:
        """docker stop (SIGTERM, grace, SIGKILL), keep the log, remove it. Idempotent."""
        self.containers.stop(handle, grace_seconds)

    def list_owned(self) -> Sequence[ReplicaHandle]:
        """Every container labelled with this project, running or not, sorted by id."""
        handles = [self.containers.handle(c.attrs) for c in self.containers.owned(False)]
        return sorted(handles, key=lambda h: h.id)

    def logs(self, handle: ReplicaHandle, tail: int = 50) -> str:
        """The container's last `tail` log lines (the kept log once it was removed)."""
        return self.containers.logs(handle, tail)

    def stopped_logs(self, endpoint: str, entity: str | None, tail: int) -> list[StoppedLog]:
        """`declare.provider.StoppedLogs`: the logs kept of removed replica containers."""
        return self.containers.stopped_logs(endpoint, entity, tail)
