"""A served model's logs and build logs through Databricks' REST API, as a user asks for them:
the Databricks SDK's `serving_endpoints.logs` and `build_logs` against the real gateway of
a real project (`declare apply` in a child process, the local provider, an MLflow registry),
behind the gateway's bearer token.

What a user sees: the replica's own log lines (its server's startup line) under a header
naming the replica, as `declare logs` prints them; a build log that says in one line that
nothing was built; a clear 404 naming an unknown served model or endpoint; 401 without the
token. The state records where each replica's log is, and the gateway reads it there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound

from tests.integration.conftest import MlflowProject
from tests.support import CliProject, manifest

pytestmark = pytest.mark.integration

TOKEN = "served-logs-token"
ENV = {"SERVING_TOKEN": TOKEN}


@pytest.fixture
def project(tmp_path: Path, mlflow_project: MlflowProject) -> Iterator[CliProject]:
    p = CliProject(tmp_path, mlflow_project.tracking_uri)
    config = p.folder / "declare.yaml"
    config.write_text(
        config.read_text().replace("gateway:\n", "gateway:\n  auth_token_env: SERVING_TOKEN\n")
    )
    p.write(manifest("iris", "1"))
    yield p
    p.declare("destroy", "--auto-approve", env=ENV)
    p.stop_leftovers()


def test_the_sdk_reads_the_served_models_logs_and_build_logs(project: CliProject) -> None:
    applied = project.declare("apply", "--auto-approve", env=ENV)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    (replica,) = project.state()["endpoints"]["iris"]["replicas"]
    assert replica["handle"]["logs"]["file"].endswith(f"{replica['handle']['id']}.log")
    host = f"http://127.0.0.1:{project.port}"
    client = WorkspaceClient(host=host, token=TOKEN, auth_type="pat")

    logs = client.serving_endpoints.logs("iris", "iris-1").logs
    assert logs.startswith(f"==> {replica['handle']['id']} (iris-1) <==\n"), logs
    assert "declare.serve: serving" in logs, logs  # the replica server's startup line
    # The same lines `declare logs` shows.
    shown = project.declare("logs", "iris", "iris-1", "--tail", "200", env=ENV)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert logs.splitlines()[-1] in shown.stdout

    build = client.serving_endpoints.build_logs("iris", "iris-1").logs
    assert "nothing was built" in build and "local provider" in build, build
    assert len(build.splitlines()) == 1

    with pytest.raises(NotFound, match=r"served model 'nope-1' does not exist.*: iris-1"):
        client.serving_endpoints.logs("iris", "nope-1")
    with pytest.raises(NotFound, match="served model 'nope-1'"):
        client.serving_endpoints.build_logs("iris", "nope-1")
    with pytest.raises(NotFound, match="serving endpoint 'nope' does not exist"):
        client.serving_endpoints.logs("nope", "iris-1")

    # The same authentication as every other read.
    bare = httpx.get(f"{host}/api/2.0/serving-endpoints/iris/served-models/iris-1/logs", timeout=30)
    assert bare.status_code == 401
    assert bare.json()["error_code"] == "UNAUTHENTICATED"
