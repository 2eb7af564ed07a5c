"""The docker provider end to end, as a user runs it: the `declare` CLI in child processes, a
real MLflow registry, real images and containers on a real engine, the real gateway, real
HTTP on 127.0.0.1.

One project walks through: plan -> apply -> predict -> a second apply plans and builds
nothing -> version change under continuous requests (none may fail; the plan shows the
image as cached) -> a version that cannot load is rolled back -> a container killed by hand
is replaced by the runtime without an apply -> a labelled container no state knows is
removed as an orphan by the runtime -> `declare logs` -> destroy --prune-images leaves no
container and no image.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from declare.provider import ProviderContext
from providers.docker import DockerProvider
from tests.integration.conftest import MlflowProject, replica_spec
from tests.integration.test_docker_provider import (  # shared session fixtures
    docker_base,
    iris_image,
    wheel_cache,
)
from tests.support import CliProject, Load

__all__ = ["docker_base", "iris_image", "wheel_cache"]


def manifest(entity: str, version: str) -> str:
    return f"""\
name: iris
provider: docker
config:
  served_entities:
    - entity_name: {entity}
      entity_version: "{version}"
      workload_size: Small
  traffic_config:
    routes:
      - served_model_name: {entity}-{version}
        traffic_percentage: 100
"""


class DockerProject(CliProject):
    def __init__(self, folder: Path, tracking_uri: str, base: str, cache: Path) -> None:
        self.name = f"dw-{secrets.token_hex(3)}"
        super().__init__(
            folder,
            tracking_uri,
            f"project: {self.name}\n"
            f"providers:\n  docker:\n    base_image: {base}\n    wheel_cache: {cache}\n",
        )
        self.provider = DockerProvider(
            ProviderContext(
                project=self.name,
                project_dir=folder,
                state_dir=folder / "state",
                settings={"base_image": base, "wheel_cache": str(cache)},
            )
        )

    def containers(self) -> list[Any]:
        client = self.provider.engine.client()
        found: list[Any] = client.containers.list(
            all=True, filters={"label": f"declare.project={self.name}"}
        )
        return found

    def recorded(self) -> list[dict[str, Any]]:
        return [
            rep["handle"] for ep in self.state()["endpoints"].values() for rep in ep["replicas"]
        ]


@pytest.fixture
def project(
    tmp_path: Path, mlflow_project: MlflowProject, docker_base: str, wheel_cache: Path
) -> Iterator[DockerProject]:
    p = DockerProject(tmp_path, mlflow_project.tracking_uri, docker_base, wheel_cache)
    p.write(manifest("iris", "1"))
    yield p
    # Leave nothing behind even when an assertion failed midway.
    p.declare("destroy", "--auto-approve")
    p.stop_leftovers()
    for container in p.containers():
        container.remove(force=True)


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def test_docker_lifecycle(project: DockerProject, mlflow_project: MlflowProject) -> None:
    # -- plan, apply (building the image unless this run built it already), predict
    plan = project.declare("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "iris v1" in plan.stdout and "(docker; new" in plan.stdout
    assert "(not cached)" in plan.stdout or "(cached)" in plan.stdout
    t0 = time.monotonic()
    applied = ok(project.declare("apply", "--auto-approve", timeout=900))
    print(f"\napply of one docker endpoint: {time.monotonic() - t0:.1f}s")
    r = project.predict()
    assert r.status_code == 200 and r.headers["served-model-name"] == "iris-1"
    assert project.url in applied
    (container,) = project.containers()
    assert container.status == "running"

    # -- a second apply of the unchanged project plans and builds nothing
    again = ok(project.declare("apply", "--auto-approve"))
    assert "No changes." in again and "build" not in again
    assert [c.id for c in project.containers()] == [container.id]

    # -- version change under continuous requests: none fails; the image is shared (cached)
    project.write(manifest("iris", "2"))
    plan = ok(project.declare("plan"))
    assert "(cached)" in plan and "(not cached)" not in plan, plan
    with Load(project.url) as load:
        time.sleep(1.0)  # traffic flows before the change starts
        t0 = time.monotonic()
        changed = project.declare("apply", "--auto-approve")
        change_seconds = time.monotonic() - t0
        time.sleep(1.0)  # and after it ends
    ok(changed)
    print(
        f"docker version change: {change_seconds:.1f}s, {load.sent} requests, "
        f"{load.failed} failed, served {dict(load.served)}"
    )
    assert load.failed == 0, load.results
    assert load.served["iris-1"] > 0 and load.served["iris-2"] > 0
    assert project.predict().headers["served-model-name"] == "iris-2"
    (container,) = project.containers()  # the v1 container is gone, not just stopped
    assert container.labels["declare.entity"] == "iris-2"

    # -- a version that cannot load: rolled back, the old one keeps serving
    project.write(manifest("broken", "1"))
    with Load(project.url, threads=2) as load:
        failed = project.declare("apply", "--auto-approve", timeout=900)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "model cannot load" in failed.stdout + failed.stderr
    assert load.failed == 0, load.results
    assert project.predict().headers["served-model-name"] == "iris-2"
    ep = project.state()["endpoints"]["iris"]
    assert ep["status"]["config_update"] == "UPDATE_FAILED"
    assert [c.labels["declare.entity"] for c in project.containers()] == ["iris-2"]

    # -- a container killed by hand: the runtime replaces it (no apply), the engine does not
    project.write(manifest("iris", "2"))
    (handle,) = project.recorded()
    killed = time.monotonic()
    project.provider.engine.client().containers.get(handle["data"]["container_id"]).kill()
    deadline = killed + 180
    while time.monotonic() < deadline:
        now = project.recorded()
        if len(now) == 1 and now[0]["id"] != handle["id"]:
            break
        time.sleep(0.2)
    print(f"\ncontainer killed: replaced by the runtime in {time.monotonic() - killed:.1f} s")
    (new,) = project.recorded()
    assert new["id"] != handle["id"]
    assert project.predict().status_code == 200
    project.event("replace", handle["id"])
    assert handle["data"]["container_id"] not in {c.id for c in project.containers()}
    ok(project.declare("apply", "--auto-approve"))  # settles the earlier failed update
    assert project.declare("plan", "--detailed-exitcode").returncode == 0

    # -- a labelled container that no state knows: an orphan, removed by the runtime
    model = mlflow_project.resolve("models:/iris/2")
    stray = project.provider.start_replica(
        replica_spec(model, model_env={}, project=project.name, entity="iris-2")
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if stray.data["container_id"] not in {c.id for c in project.containers()}:
            break
        time.sleep(0.5)
    assert stray.data["container_id"] not in {c.id for c in project.containers()}
    assert project.declare("plan", "--detailed-exitcode").returncode == 0

    # -- declare logs shows the replica's log
    logs = ok(
        subprocess.run(
            [
                *project.argv("logs", "iris", "iris-2", "--tail", "20")[:-1],
                "-C",
                str(project.folder),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=project.env(),
        )
    )
    assert "Uvicorn running" in logs or "POST /invocations" in logs

    # -- destroy --prune-images: no container, and the images this project used are gone
    images = {c.image.tags[0] for c in project.containers()}
    assert images
    destroyed = ok(project.declare("destroy", "--auto-approve", "--prune-images"))
    assert project.containers() == []
    assert project.state()["endpoints"] == {}
    assert "docker: removed" in destroyed
    client = project.provider.engine.client()
    for tag in images:
        assert not client.images.list(name=tag), f"{tag} still on the engine"
    with pytest.raises(httpx.ConnectError):
        project.predict()
    record = json.loads((project.folder / "state" / "docker" / "images.json").read_text())
    assert record["images"] == []


def test_docker_scales_up_and_to_zero_and_back(project: DockerProject) -> None:
    """The runtime on the docker provider: scale up under load, down after quiet, to zero
    and back with the first request answered, its time next to the replica's own start."""
    project.write(
        manifest("iris", "1").replace(
            "      workload_size: Small\n",
            "      min_provisioned_concurrency: 0\n      max_provisioned_concurrency: 8\n"
            "      scale_to_zero_enabled: true\n",
        )
        + "autoscaling:\n  scale_down_after_seconds: 3\n  scale_to_zero_after_seconds: 4\n"
    )
    ok(project.declare("apply", "--auto-approve", timeout=900))
    assert len(project.containers()) == 1
    with Load(project.url, threads=12, max_requests=20_000, max_seconds=120) as load:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(project.recorded()) < 2:
            time.sleep(0.2)
        time.sleep(2)
    assert len(project.recorded()) == 2, project.events()
    assert load.failed == 0, dict(load.results)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and project.recorded():
        time.sleep(0.5)
    assert project.recorded() == [] and project.containers() == [], project.events()
    started = time.monotonic()
    first = project.predict()
    woke = time.monotonic() - started
    assert first.status_code == 200, first.text
    log = (project.folder / "state" / "runtime" / "runtime.log").read_text()
    starts = [float(x) for x in re.findall(r"replica\[0\]\.start: done after ([\d.]+)s", log)]
    readies = [float(x) for x in re.findall(r"replica\[0\]\.ready: done after ([\d.]+)s", log)]
    own = starts[-1] + readies[-1]
    print(
        f"\ndocker: scaled up under 12 clients ({load.sent} requests, 0 failed); first 200 "
        f"after scale to zero {woke:.2f} s, the replica's own start {own:.2f} s "
        f"(container {starts[-1]:.2f} s + model load to first prediction {readies[-1]:.2f} s)"
    )
    kinds = [e["kind"] for e in project.events()]
    assert "scale" in kinds and "zero" in kinds and "wake" in kinds, kinds


def test_an_unreachable_engine_stops_plan_and_apply_before_anything_changes(
    tmp_path: Path, mlflow_project: MlflowProject
) -> None:
    engine = f"unix://{tmp_path}/no-engine.sock"
    project = CliProject(
        tmp_path,
        mlflow_project.tracking_uri,
        f"providers:\n  docker:\n    engine: {engine}\n",
    )
    project.write(manifest("iris", "1"))
    for command in (("plan",), ("apply", "--auto-approve")):
        result = project.declare(*command)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"cannot reach the Docker engine at {engine}" in result.stderr
        assert "iris.yaml" in result.stderr and "Traceback" not in result.stderr
    # Nothing was started or recorded: no gateway, no state.
    assert not (tmp_path / "state" / "gateway").exists()
    assert not (tmp_path / "state" / "declare.tfstate.json").exists() or (
        project.state()["endpoints"] == {}
    )
