"""The docker provider against a real Docker engine: real images, containers and predictions.

The engine and the base image come from `scripts/docker-engine` (scripts/test runs it when
CI=true or DECLARE_DOCKER_TESTS=1). In CI these tests must run: an engine that does not
answer there fails them loudly; on a developer machine without an engine they are skipped
with the reason. Every container here is labelled with a project name unique to the test
run, so tests on one engine never see each other's containers, and each test stops what it
started through the provider.

The session fixtures here (`docker_base`, `wheel_cache`, `iris_image`) are shared with
test_docker_workflow.py, which imports them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from declare.errors import ProviderError
from declare.model import ReplicaHandle, ReplicaSpec, ResolvedModel
from declare.provider import Liveness, ProviderContext
from providers.docker import DockerProvider
from providers.docker.containers import LABEL_PORT, LABEL_PROJECT, LABEL_REPLICA
from tests import provider_conformance as conformance
from tests.integration.conftest import (
    MlflowProject,
    replica_spec,
    serving_example,
    wait_for_prediction,
)

BASE_IMAGE = os.environ.get("DECLARE_BASE_IMAGE", "declare-base:bookworm-py311")
RUN_ID = secrets.token_hex(3)


def _engine_problem() -> str | None:
    import docker
    import docker.errors

    try:
        client = docker.from_env(version="auto", timeout=30)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        return f"no Docker engine answers ({exc}); run scripts/docker-engine"
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.DockerException:
        return f"the base image {BASE_IMAGE} is missing; run scripts/docker-engine"
    return None


@pytest.fixture(scope="session")
def docker_base() -> str:
    """The base image name, once a real engine answers and has it (else fail in CI, skip)."""
    problem = _engine_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Docker tests, but {problem}")
        pytest.skip(f"Docker tests need an engine: {problem} (CI runs them)")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One host wheel cache for the whole run: each environment's wheels download once."""
    return tmp_path_factory.mktemp("docker-wheels")


def docker_settings(base: str, cache: Path) -> dict[str, Any]:
    return {"base_image": base, "wheel_cache": str(cache)}


def make_provider(tmp: Path, base: str, cache: Path, **settings: Any) -> DockerProvider:
    project_dir = tmp / "project"
    project_dir.mkdir(parents=True, exist_ok=True)
    context = ProviderContext(
        project=f"dt-{RUN_ID}-{secrets.token_hex(2)}",
        project_dir=project_dir,
        state_dir=project_dir / "state",
        settings={**docker_settings(base, cache), **settings},
    )
    return DockerProvider(context)


@pytest.fixture(scope="session")
def iris_image(
    docker_base: str,
    wheel_cache: Path,
    mlflow_project: MlflowProject,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The iris environment image, built once per run when the engine does not have it."""
    provider = make_provider(tmp_path_factory.mktemp("iris-image"), docker_base, wheel_cache)
    model = mlflow_project.resolve("models:/iris/1")
    info = provider.build_info(model, "CPU")
    started = time.monotonic()
    built = provider.build(model, "CPU")
    print(
        f"\n[iris_image] {built.ref}: {'cached' if info.cached else 'built'} in "
        f"{time.monotonic() - started:.1f}s"
    )
    return built.ref


@pytest.fixture
def provider(
    tmp_path: Path, docker_base: str, wheel_cache: Path, iris_image: str
) -> Iterator[DockerProvider]:
    p = make_provider(tmp_path, docker_base, wheel_cache)
    yield p
    for handle in p.list_owned():
        p.stop_replica(handle, grace_seconds=2.0)


def _spec(provider: DockerProvider, model: ResolvedModel, **kwargs: Any) -> ReplicaSpec:
    return replica_spec(model, model_env={}, project=provider.context.project, **kwargs)


# -- conformance -------------------------------------------------------------------------------


@pytest.fixture
def harness(provider: DockerProvider, mlflow_project: MlflowProject) -> conformance.Harness:
    model = mlflow_project.resolve("models:/iris/1")

    def kill(handle: ReplicaHandle) -> None:
        provider.engine.client().containers.get(handle.data["container_id"]).kill()

    return conformance.Harness.reopening(
        provider,
        provider.context,
        lambda index: _spec(provider, model, index=index),
        kill,
        grace_seconds=2.0,
    )


class TestConformance(conformance.ReplicaConformance):
    """The replica conformance checks, against real containers. (The build check expects the
    model's env hash as the build key; an image's key is its content hash, tested below.)"""


# -- images ------------------------------------------------------------------------------------


def test_one_image_per_environment_and_a_second_build_builds_nothing(
    provider: DockerProvider, mlflow_project: MlflowProject, iris_image: str
) -> None:
    v1 = provider.build_info(mlflow_project.resolve("models:/iris/1"), "CPU")
    v2 = provider.build_info(mlflow_project.resolve("models:/iris/2"), "CPU")
    broken = provider.build_info(mlflow_project.resolve("models:/broken/1"), "CPU")
    # Two versions with the same requirements share one image, already built.
    assert (v1.key, v1.ref) == (v2.key, v2.ref) == (v1.key, iris_image)
    assert v1.needed and v1.cached
    # Another environment (other requirements) is another image.
    assert broken.key != v1.key and broken.ref != v1.ref
    # Building what exists takes no time and changes nothing.
    started = time.monotonic()
    again = provider.build(mlflow_project.resolve("models:/iris/2"), "CPU")
    assert time.monotonic() - started < 5.0
    assert again.cached and again.ref == iris_image
    image = provider.engine.client().images.get(iris_image)
    assert image.labels["declare.env-key"] == v1.key


def test_failed_build_shows_its_log(
    tmp_path: Path, docker_base: str, wheel_cache: Path, mlflow_project: MlflowProject
) -> None:
    provider = make_provider(tmp_path, docker_base, wheel_cache)
    good = mlflow_project.resolve("models:/iris/1")
    folder = tmp_path / "model"
    shutil.copytree(good.source, folder)
    # A real package at a version that does not exist: pip cannot resolve it.
    (folder / "requirements.txt").write_text("mlflow==3.0.0\nscikit-learn==0.0.1\n")
    model = ResolvedModel(uri=str(folder), pinned_uri=str(folder), source=str(folder))
    info = provider.build_info(model, "CPU")
    assert not info.cached
    with pytest.raises(ProviderError) as caught:
        provider.build(model, "CPU")
    message = str(caught.value)
    assert f"building image {info.ref} failed" in message
    assert "scikit-learn==0.0.1" in message  # pip's own words, from the log's tail
    log = provider.builds_dir / f"{info.key}.log"
    assert str(log) in message and "pip download" in log.read_text()
    assert not provider.build_info(model, "CPU").cached


# -- replicas ----------------------------------------------------------------------------------


def test_replica_serves_predictions_from_a_read_only_model_on_loopback(
    provider: DockerProvider, mlflow_project: MlflowProject
) -> None:
    model = mlflow_project.resolve("models:/iris/2")
    started = time.monotonic()
    handle = provider.start_replica(_spec(provider, model, entity="iris-2"))
    assert time.monotonic() - started < 10.0, "start_replica must return at once"
    answer, _ = wait_for_prediction(handle, serving_example(model), timeout=120)
    print(f"\ncontainer start to first prediction: {time.monotonic() - started:.1f}s")
    assert len(answer["predictions"]) == 3
    assert handle.url.startswith("http://127.0.0.1:")

    attrs = provider.engine.client().containers.get(handle.data["container_id"]).attrs
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "host"
    assert host["RestartPolicy"]["Name"] == "no"  # the runtime is the one restarter
    assert host["NanoCpus"] == 1_000_000_000 and host["Memory"] == 2 * 2**30
    (mount,) = attrs["Mounts"]
    assert mount["Destination"] == "/model" and mount["RW"] is False
    assert Path(mount["Source"]) == Path(model.source).resolve()
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_PROJECT] == provider.context.project
    assert labels["declare.endpoint"] == "iris" and labels["declare.entity"] == "iris-2"
    assert labels[LABEL_REPLICA] == handle.id and labels[LABEL_PORT] == str(handle.data["port"])

    # The container cannot write the registry's files.
    container = provider.engine.client().containers.get(handle.data["container_id"])
    code, output = container.exec_run(["sh", "-c", "touch /model/x"])
    assert code != 0 and b"Read-only file system" in output

    # A graceful stop: SIGTERM reaches the server (through the container's init), so it
    # does not wait out the grace period.
    assert host["Init"] is True
    started = time.monotonic()
    provider.stop_replica(handle, grace_seconds=10.0)
    assert time.monotonic() - started < 5.0
    assert provider.status(handle).liveness is Liveness.DEAD
    # The log outlives the container.
    assert "Uvicorn running" in provider.logs(handle, tail=50)


def test_a_broken_model_is_dead_with_the_reason(
    tmp_path: Path, docker_base: str, wheel_cache: Path, mlflow_project: MlflowProject
) -> None:
    provider = make_provider(tmp_path, docker_base, wheel_cache, restart_policy="no")
    model = mlflow_project.resolve("models:/broken/1")
    provider.build(model, "CPU")
    handle = provider.start_replica(_spec(provider, model, entity="broken-1"))
    try:
        status = conformance.wait_for_liveness(provider, handle, Liveness.DEAD, 120)
        assert status.liveness is Liveness.DEAD
        assert "model cannot load" in status.reason, status.reason
        assert "exit code" in status.reason
    finally:
        provider.stop_replica(handle, grace_seconds=1.0)


def test_cpu_limit_is_lowered_to_what_the_engine_has(
    tmp_path: Path, docker_base: str, wheel_cache: Path, mlflow_project: MlflowProject
) -> None:
    provider = make_provider(tmp_path, docker_base, wheel_cache, cpus=64, memory="512m")
    config = provider.container_config(
        _spec(provider, mlflow_project.resolve("models:/iris/1")), "r1", 12345
    )
    ncpu = int(provider.engine.info()["NCPU"])
    assert config["nano_cpus"] == ncpu * 1_000_000_000
    assert config["mem_limit"] == 512 * 2**20
    assert "device_requests" not in config


# -- GPUs: what is sent to the engine (no GPU on these machines) --------------------------------


def test_gpu_workload_is_refused_at_plan_time_on_an_engine_without_gpu_runtime(
    provider: DockerProvider, mlflow_project: MlflowProject
) -> None:
    model = mlflow_project.resolve("models:/iris/1")
    assert "nvidia" not in provider.engine.info().get("Runtimes", {})
    with pytest.raises(ProviderError) as caught:
        provider.build_info(model, "GPU_MEDIUM")
    assert "GPU_MEDIUM needs 1 GPU" in str(caught.value)
    assert "'nvidia' is not among its runtimes" in str(caught.value)
    with pytest.raises(ProviderError, match="no GPU runtime"):
        provider.start_replica(_spec(provider, model, workload_type="MULTIGPU_MEDIUM"))
    assert provider.list_owned() == []


def test_gpu_device_requests_reach_the_engine(
    provider: DockerProvider, mlflow_project: MlflowProject
) -> None:
    spec = _spec(
        provider, mlflow_project.resolve("models:/iris/1"), workload_type="MULTIGPU_MEDIUM"
    )
    config = provider.container_config(spec, "gpu-check", 12346)
    config["name"] = f"declare-gpu-check-{RUN_ID}"
    client = provider.engine.client()
    # Created, never started: the engine stores the request as `docker run --gpus 4` would.
    container = client.containers.create(**config)
    try:
        host = container.attrs["HostConfig"]
        (request,) = host["DeviceRequests"]
        assert request["Driver"] == "nvidia"
        assert request["Count"] == 4
        assert request["Capabilities"] == [["gpu"]]
        ncpu = int(provider.engine.info()["NCPU"])
        assert host["NanoCpus"] == min(24, ncpu) * 1_000_000_000
    finally:
        container.remove(force=True)


# -- the engine --------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:9"])
def test_an_unreachable_engine_is_a_clear_error(tmp_path: Path, engine: str) -> None:
    provider = make_provider(tmp_path, BASE_IMAGE, tmp_path / "wheels", engine=engine)
    with pytest.raises(ProviderError) as caught:
        provider.check()
    message = str(caught.value)
    assert f"cannot reach the Docker engine at {engine}" in message
    assert "providers.docker.engine" in message and "DOCKER_HOST" in message
