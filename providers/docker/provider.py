"""The docker provider: each replica is a container running MLflow's scoring server.

A replica is a container of the model environment's image (`providers.docker.image`) that
runs `mlflow models serve -m /model --env-manager local -w 1` with **host networking**, on
its own loopback port (engines here run with `--bridge=none`; no traffic ever goes to a
container address). The container carries labels naming the project, endpoint, served
entity, generation, replica index, replica id and port, so `list_owned()` finds every
replica of the project on the engine without the state file; it has a restart policy
(default unless-stopped) and the CPU and memory limits of its workload type; a GPU workload
asks for GPUs with a device request (`providers.docker.workloads`).

The model's artifacts are **mounted read-only** at /model, not copied into the image: an
image holds an environment shared by every model with the same requirements, so a version
change with unchanged requirements builds nothing; and the container cannot alter the
registry's files. Artifacts not on a local path (s3://, http://, ...) are downloaded once on
the host into `state_dir/docker/models/`. An engine on another machine (tcp://, ssh://)
cannot see the host's folders, so there the artifacts are copied into the container before
it starts.

Stopping is graceful: the core drains the replica first; then `docker stop` (SIGTERM, the
grace period, SIGKILL), the container's log is kept in `state_dir/docker/logs/<id>.log`,
and the container is removed. `prune_images()` removes the images this project's replicas
used that no container on the engine uses any more (`declare destroy --prune-images`).

What it does not do: readiness (the core probes /invocations over HTTP), pulling images
other than the base image, scheduling across several engines (the gpu-hosts provider).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import secrets
import tarfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from declare import procs
from declare.errors import ProviderError
from declare.model import ReplicaHandle, ReplicaSpec, ResolvedModel
from declare.provider import BuildInfo, Liveness, ProviderContext, ReplicaStatus
from providers._shared import exclusive
from providers.docker import image as images
from providers.docker.settings import DockerSettings
from providers.docker.workloads import GPU_COUNTS, gpu_runtime_problem, resources

__all__ = ["PROVIDER_NAME", "DockerProvider"]

PROVIDER_NAME = "docker"
MODEL_DIR = "/model"
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
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:? ?")
_LAUNCHER_LINE = re.compile(r"^Exception: Command .* returned non zero return code")
_DEFAULT_ENGINE = "unix:///var/run/docker.sock"


def sanitize_id(text: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    return re.sub(r"-{2,}", "-", cleaned).strip("-")


class DockerProvider:
    """Replicas as containers on one Docker engine (see the module docstring)."""

    name = PROVIDER_NAME

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.settings = DockerSettings.parse(context.settings, context.project_dir)
        root = context.state_dir / PROVIDER_NAME
        self.builds_dir = root / "builds"
        self.logs_dir = root / "logs"
        self.models_dir = root / "models"
        self._images_record = root / "images.json"
        self._lock_path = root / ".lock"
        self._client_obj: Any = None
        self._info: Mapping[str, Any] | None = None
        self._plans: dict[str, images.ImagePlan] = {}
        self._plans_lock = threading.Lock()

    # -- the engine -------------------------------------------------------------------------

    @property
    def engine_url(self) -> str:
        return self.settings.engine or os.environ.get("DOCKER_HOST") or _DEFAULT_ENGINE

    @property
    def engine_is_local(self) -> bool:
        """True when the engine sees this machine's folders (a unix socket here)."""
        return self.engine_url.startswith("unix://")

    def _client(self) -> Any:
        if self._client_obj is not None:
            return self._client_obj
        import docker
        import docker.errors

        url = self.engine_url
        try:
            if self.settings.engine is None:
                client = docker.from_env(version="auto", timeout=600)
            else:
                client = docker.DockerClient(
                    base_url=url,
                    version="auto",
                    timeout=600,
                    use_ssh_client=url.startswith("ssh://"),
                )
            client.ping()
        except (docker.errors.DockerException, OSError) as exc:
            raise ProviderError(
                f"cannot reach the Docker engine at {url}: {_first_line(exc)}. Start it "
                "(scripts/docker-engine does, on Debian), or point providers.docker.engine "
                "in declare.yaml or DOCKER_HOST at a running engine"
            ) from None
        self._client_obj = client
        return client

    def _engine_info(self) -> Mapping[str, Any]:
        if self._info is None:
            import docker.errors

            try:
                info: Mapping[str, Any] = self._client().info()
            except docker.errors.DockerException as exc:
                raise ProviderError(
                    f"the Docker engine at {self.engine_url} does not answer: {_first_line(exc)}"
                ) from None
            self._info = info
        return self._info

    def check(self) -> None:
        """Raise ProviderError when the engine is missing or does not answer."""
        self._engine_info()

    # -- images -----------------------------------------------------------------------------

    def image_plan(self, model: ResolvedModel) -> images.ImagePlan:
        """What image serves `model` (cached per model source for this provider's life)."""
        cache_key = f"{model.source}|{model.env_hash}"
        with self._plans_lock:
            found = self._plans.get(cache_key)
        if found is not None:
            return found
        plan = images.image_plan(
            model,
            base_image=self.settings.base_image,
            python_version=self.settings.python_version,
            image_repo=self.settings.image_repo,
            mlflow_package=self.settings.mlflow_package,
            extra=self.settings.extra_requirements,
            engine_arch=str(self._engine_info().get("Architecture", "x86_64")),
        )
        with self._plans_lock:
            self._plans[cache_key] = plan
        return plan

    def _image_exists(self, tag: str) -> bool:
        import docker.errors

        try:
            self._client().images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.DockerException as exc:
            raise ProviderError(f"cannot inspect image {tag}: {_first_line(exc)}") from None
        return True

    def check_workload(self, workload_type: str, where: str = "") -> None:
        """Raise ProviderError when the engine cannot run `workload_type` (no GPU runtime)."""
        if workload_type not in GPU_COUNTS:
            raise ProviderError(f"{where}unknown workload_type {workload_type!r}")
        problem = gpu_runtime_problem(workload_type, self._engine_info())
        if problem:
            raise ProviderError(f"{where}{problem} (engine {self.engine_url})")

    def build_info(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """The image for the model's environment; checked at plan time, before any change:
        a GPU workload on an engine without a GPU runtime fails here."""
        self.check_workload(workload_type, f"model {model.describe()}: ")
        plan = self.image_plan(model)
        return BuildInfo(
            key=plan.key, needed=True, cached=self._image_exists(plan.tag), ref=plan.tag
        )

    def build(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """Build the environment image unless its tag exists; the log is kept either way."""
        plan = self.image_plan(model)
        if not self._image_exists(plan.tag):
            images.build_image(
                self._client(),
                plan,
                self.settings.wheel_cache,
                self.build_log_path(plan),
                labels={LABEL_PROVIDER: PROVIDER_NAME, LABEL_IMAGE: "model-environment"},
            )
        self._remember_image(plan.tag)
        return BuildInfo(key=plan.key, needed=True, cached=True, ref=plan.tag)

    def build_log_path(self, plan: images.ImagePlan) -> Path:
        return self.builds_dir / f"{plan.key}.log"

    def prune_images(self) -> list[str]:
        """Remove the images this project's replicas used that no container uses now."""
        import docker.errors

        client = self._client()
        removed: list[str] = []
        with exclusive(self._lock_path):
            tags = self._read_images()
            keep = set()
            for tag in tags:
                try:
                    users = client.containers.list(all=True, filters={"ancestor": tag})
                except docker.errors.DockerException as exc:
                    raise ProviderError(f"cannot list containers: {_first_line(exc)}") from None
                if users:
                    keep.add(tag)
                    continue
                try:
                    client.images.remove(tag)
                    removed.append(tag)
                except docker.errors.ImageNotFound:
                    pass
                except docker.errors.APIError as exc:
                    keep.add(tag)
                    if exc.status_code != 409:  # 409: in use (a container appeared meanwhile)
                        raise ProviderError(
                            f"cannot remove image {tag}: {_first_line(exc)}"
                        ) from None
            self._write_images(sorted(keep))
        return removed

    # -- replicas ---------------------------------------------------------------------------

    def container_config(self, spec: ReplicaSpec, replica_id: str, port: int) -> dict[str, Any]:
        """The arguments of `containers.create` for one replica (what the engine is sent)."""
        import docker.types

        info = self._engine_info()
        limits = resources(
            spec.workload_type,
            self.settings.cpus,
            self.settings.memory_bytes,
            engine_cpus=int(info.get("NCPU") or 0) or None,
            engine_memory=int(info.get("MemTotal") or 0) or None,
        )
        plan = self.image_plan(spec.model)
        labels = {
            **spec.labels,
            LABEL_PROVIDER: PROVIDER_NAME,
            LABEL_REPLICA: replica_id,
            LABEL_PORT: str(port),
            LABEL_MODEL: spec.model.pinned_uri,
            LABEL_IMAGE: plan.tag,
        }
        restart: dict[str, Any] = {"Name": self.settings.restart_policy}
        if self.settings.restart_policy == "on-failure":
            restart["MaximumRetryCount"] = 5
        config: dict[str, Any] = {
            "image": plan.tag,
            "name": self.container_name(replica_id),
            "command": [*SERVE, "-h", self.settings.host, "-p", str(port)],
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
            config["device_requests"] = [
                docker.types.DeviceRequest(**req) for req in limits.device_requests()
            ]
        return config

    def container_name(self, replica_id: str) -> str:
        return sanitize_id(f"declare-{self.context.project}-{replica_id}")[:200]

    def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Create and start the container, and return at once (it is not ready yet)."""
        import docker.errors
        import docker.types

        where = f"endpoint {spec.endpoint!r}, served entity {spec.entity!r}: "
        self.check_workload(spec.workload_type, where)
        plan = self.image_plan(spec.model)
        if not self._image_exists(plan.tag):
            raise ProviderError(
                f"{where}image {plan.tag} for {spec.model.describe()} is not on the engine "
                "(removed since the plan was made?); run `declare apply` again to build it"
            )
        model_dir = self._model_dir(spec.model, where)
        client = self._client()
        with exclusive(self._lock_path):
            owned = self._containers(all_projects=True)
            taken_ids = {c.labels.get(LABEL_REPLICA) for c in owned}
            taken_ports = frozenset(
                int(p) for c in owned if (p := c.labels.get(LABEL_PORT, "")).isdigit()
            )
            replica_id = self._new_id(spec, taken_ids)
            try:
                port = procs.free_port(self.settings.host, exclude=taken_ports)
            except OSError as exc:
                raise ProviderError(f"{where}no free port on {self.settings.host}") from exc
            config = self.container_config(spec, replica_id, port)
            if self.engine_is_local:
                config["mounts"] = [
                    docker.types.Mount(
                        target=MODEL_DIR, source=str(model_dir), type="bind", read_only=True
                    )
                ]
            try:
                container = client.containers.create(**config)
            except docker.errors.DockerException as exc:
                raise ProviderError(
                    f"{where}the engine refused the container: {_first_line(exc)}"
                ) from None
        try:
            if not self.engine_is_local:
                container.put_archive("/", _model_tar(model_dir))
            container.start()
            container.reload()
        except docker.errors.DockerException as exc:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
            raise ProviderError(
                f"{where}container {config['name']} did not start: {_first_line(exc)}"
            ) from None
        self._remember_image(plan.tag)
        return self._handle(container.attrs)

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        """ALIVE while the handle's container (by its id) runs and is not restarting."""
        container = self._container(handle)
        if container is None:
            return ReplicaStatus(
                handle, Liveness.DEAD, f"container {self._name_of(handle)} no longer exists"
            )
        state = container.attrs.get("State") or {}
        if state.get("Running") and not state.get("Restarting"):
            return ReplicaStatus(handle, Liveness.ALIVE)
        return ReplicaStatus(handle, Liveness.DEAD, self._death_reason(handle, container, state))

    def stop_replica(self, handle: ReplicaHandle, grace_seconds: float) -> None:
        """docker stop (SIGTERM, grace, SIGKILL), keep the log, remove it. Idempotent."""
        import docker.errors

        container = self._container(handle)
        if container is None:
            return
        try:
            container.stop(timeout=max(1, math.ceil(grace_seconds)))
        except docker.errors.NotFound:
            return
        except docker.errors.DockerException as exc:
            raise ProviderError(
                f"replica {handle.id}: cannot stop it: {_first_line(exc)}"
            ) from None
        self._save_log(handle, container)
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            raise ProviderError(
                f"replica {handle.id}: cannot remove its container: {_first_line(exc)}"
            ) from None

    def list_owned(self) -> Sequence[ReplicaHandle]:
        """Every container labelled with this project, running or not, sorted by id."""
        handles = [self._handle(c.attrs) for c in self._containers(all_projects=False)]
        return sorted(handles, key=lambda h: h.id)

    def logs(self, handle: ReplicaHandle, tail: int = 50) -> str:
        """The container's last `tail` log lines (the kept log once it was removed)."""
        import docker.errors

        container = self._container(handle)
        if container is not None:
            try:
                raw: bytes = container.logs(tail=tail)
                return raw.decode(errors="replace").rstrip("\n")
            except docker.errors.DockerException:
                pass
        return procs.log_tail(self._log_path(handle), tail)

    # -- internals --------------------------------------------------------------------------

    def _containers(self, all_projects: bool) -> list[Any]:
        import docker.errors

        filters = [f"{LABEL_PROVIDER}={PROVIDER_NAME}"]
        if not all_projects:
            filters.append(f"{LABEL_PROJECT}={self.context.project}")
        try:
            found: list[Any] = self._client().containers.list(
                all=True, filters={"label": filters}, ignore_removed=True
            )
        except docker.errors.DockerException as exc:
            raise ProviderError(
                f"cannot list containers on {self.engine_url}: {_first_line(exc)}"
            ) from None
        return found

    def _container(self, handle: ReplicaHandle) -> Any:
        """The handle's container, or None when it no longer exists."""
        import docker.errors

        if handle.provider != PROVIDER_NAME:
            raise ProviderError(
                f"replica {handle.id} belongs to provider {handle.provider!r}, not 'docker'"
            )
        container_id = handle.data.get("container_id")
        if not isinstance(container_id, str) or not container_id:
            raise ProviderError(f"replica {handle.id}: its handle has no container id")
        try:
            return self._client().containers.get(container_id)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise ProviderError(
                f"replica {handle.id}: cannot inspect its container: {_first_line(exc)}"
            ) from None

    def _handle(self, attrs: Mapping[str, Any]) -> ReplicaHandle:
        labels = dict((attrs.get("Config") or {}).get("Labels") or {})
        port = int(labels[LABEL_PORT])
        return ReplicaHandle(
            id=labels[LABEL_REPLICA],
            provider=PROVIDER_NAME,
            endpoint=labels["declare.endpoint"],
            entity=labels["declare.entity"],
            generation=labels["declare.generation"],
            url=f"http://{self.settings.host}:{port}",
            data={
                "container_id": str(attrs["Id"]),
                "container": str(attrs.get("Name", "")).lstrip("/"),
                "port": port,
                "image": labels.get(LABEL_IMAGE, ""),
                "model_uri": labels.get(LABEL_MODEL, ""),
                "labels": {k: labels[k] for k in SPEC_LABELS if k in labels},
            },
        )

    def _name_of(self, handle: ReplicaHandle) -> str:
        return str(handle.data.get("container") or handle.id)

    def _death_reason(self, handle: ReplicaHandle, container: Any, state: Mapping[str, Any]) -> str:
        code = state.get("ExitCode")
        if state.get("Restarting"):
            reason = f"container {self._name_of(handle)} is restarting after exit code {code}"
        else:
            reason = f"container {self._name_of(handle)} is {state.get('Status', 'not running')}"
            reason += f" (exit code {code})"
        if state.get("OOMKilled"):
            reason += ", killed for exceeding its memory limit"
        error = ""
        for line in reversed(self.logs(handle, tail=200).splitlines()):
            text = line.strip()
            if _ERROR_LINE.match(text) and not _LAUNCHER_LINE.match(text):
                error = text[:300]
                break
        return f"{reason}: {error}" if error else reason

    def _log_path(self, handle: ReplicaHandle) -> Path:
        return self.logs_dir / f"{handle.id}.log"

    def _save_log(self, handle: ReplicaHandle, container: Any) -> None:
        import docker.errors

        try:
            raw: bytes = container.logs()
        except docker.errors.DockerException:
            return
        path = self._log_path(handle)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)

    def _model_dir(self, model: ResolvedModel, where: str) -> Path:
        source = model.source or model.pinned_uri
        if images._is_local(source):
            path = images.local_path(source)
            if not (path / "MLmodel").is_file():
                raise ProviderError(
                    f"{where}model {model.describe()} has no MLmodel at {path}; "
                    "was it deleted since the plan was made?"
                )
            return path.resolve()
        target = self.models_dir / hashlib.sha256(source.encode()).hexdigest()[:16]
        if (target / "MLmodel").is_file():
            return target
        import mlflow.artifacts

        try:
            fetched = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(target.with_name(target.name + ".partial"))
            )
        except Exception as exc:
            raise ProviderError(
                f"{where}cannot download the artifacts of {model.describe()} from {source}: "
                f"{_first_line(exc)}"
            ) from None
        os.replace(fetched, target)
        return target

    def _new_id(self, spec: ReplicaSpec, taken: set[str | None]) -> str:
        while True:
            candidate = sanitize_id(f"{spec.endpoint}-{spec.entity}-{secrets.token_hex(3)}")
            if candidate not in taken:
                return candidate

    def _read_images(self) -> list[str]:
        try:
            data = json.loads(self._images_record.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ProviderError(f"unreadable image record {self._images_record}: {exc}") from None
        tags = data.get("images") if isinstance(data, dict) else None
        return [str(t) for t in tags] if isinstance(tags, list) else []

    def _write_images(self, tags: Sequence[str]) -> None:
        self._images_record.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._images_record.with_name(f".images.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"images": sorted(set(tags))}, indent=2) + "\n")
        os.replace(tmp, self._images_record)

    def _remember_image(self, tag: str) -> None:
        with exclusive(self._lock_path):
            tags = self._read_images()
            if tag not in tags:
                self._write_images([*tags, tag])


def _model_tar(folder: Path) -> bytes:
    """The model folder as a tar whose top folder is /model (for engines on other hosts)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(folder), arcname=MODEL_DIR.lstrip("/"), recursive=True)
    return buffer.getvalue()


def _first_line(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
