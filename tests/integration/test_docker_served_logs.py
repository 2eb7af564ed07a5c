"""A served model's logs and build logs on the docker provider, through Databricks' REST API:
the `declare` CLI in child processes, a real engine, a real image build, the real gateway,
and the Databricks SDK's `serving_endpoints.logs` and `build_logs` as a user calls them.

The project builds its own image (its own `image_repo`, so the tag is not on the engine
yet) and so keeps that build's output in its state folder; the gateway serves it from
there, and asks the engine's API for the container's own lines (never the docker SDK).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound

from tests.integration.conftest import MlflowProject
from tests.integration.test_docker_provider import (  # shared session fixtures
    docker_base,
    iris_image,
    wheel_cache,
)
from tests.integration.test_docker_workflow import DockerProject, manifest, ok

__all__ = ["docker_base", "iris_image", "wheel_cache"]

pytestmark = pytest.mark.integration


@pytest.fixture
def project(
    tmp_path: Path,
    mlflow_project: MlflowProject,
    docker_base: str,
    wheel_cache: Path,
    iris_image: str,  # its wheels are in the cache: this build installs them, offline
) -> Iterator[DockerProject]:
    p = DockerProject(tmp_path, mlflow_project.tracking_uri, docker_base, wheel_cache)
    repo = f"declare-logs-test-{secrets.token_hex(3)}"
    config = p.folder / "declare.yaml"
    config.write_text(config.read_text() + f"    image_repo: {repo}\n")
    p.write(manifest("iris", "1"))
    yield p
    p.declare("destroy", "--auto-approve", "--prune-images")
    p.stop_leftovers()
    for container in p.containers():
        container.remove(force=True)
    client = p.provider.engine.client()
    for image in client.images.list(name=repo):
        client.images.remove(image.id, force=True)


def test_docker_served_model_logs_and_build_logs(project: DockerProject) -> None:
    applied = ok(project.declare("apply", "--auto-approve", timeout=900))
    assert "build" in applied
    (handle,) = project.recorded()
    assert handle["logs"]["container"] == handle["data"]["container_id"]
    client = WorkspaceClient(
        host=f"http://127.0.0.1:{project.port}", token="unused", auth_type="pat"
    )
    assert project.predict().status_code == 200  # the server logs the request

    logs = client.serving_endpoints.logs("iris", "iris-1").logs
    assert logs.startswith(f"==> {handle['id']} (iris-1) <==\n"), logs
    assert "Uvicorn running" in logs or "POST /invocations" in logs, logs
    assert "\x00" not in logs and "\x01" not in logs  # the engine's frame headers are gone

    build = client.serving_endpoints.build_logs("iris", "iris-1").logs
    key = handle["data"]["image"].rsplit(":", 1)[1]
    kept = (project.folder / "state" / "docker" / "builds" / f"{key}.log").read_text()
    assert f"== build {handle['data']['image']} from " in build, build
    assert "== install (no network)" in build and "== built " in build, build
    assert build.splitlines()[-1] == kept.splitlines()[-1]

    with pytest.raises(NotFound, match="served model 'iris-2'"):
        client.serving_endpoints.build_logs("iris", "iris-2")
