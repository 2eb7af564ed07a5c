"""Secret references reach the replica and nothing else: not the state, a plan (shown or
saved), declare's output, the provider's records or any log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import MlflowProject
from tests.support import CliProject, manifest

SECRET = "s3cr3t-value-4f9a1c"
OTHER = "other-secret-77d2e0"
STRAY = "stray-credential-5be1"  # exported by the shell, needed by no process declare starts
ENV = {
    "DECLARE_SECRET_TEAM_API_KEY": SECRET,
    "DECLARE_SECRET_OTHER_TOKEN": OTHER,
    "UNRELATED_CLOUD_KEY": STRAY,
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-for-replicas",
    "TEAM_REGION": "eu-test-1",  # passed on by providers.local.pass_env: [TEAM_*]
}


@pytest.fixture
def project(tmp_path: Path, mlflow_project: MlflowProject) -> Iterator[CliProject]:
    p = CliProject(
        tmp_path, mlflow_project.tracking_uri, "providers:\n  local:\n    pass_env: [TEAM_*]\n"
    )
    p.write(
        manifest("iris", "1").replace(
            "      workload_size: Small\n",
            "      workload_size: Small\n"
            "      environment_vars:\n"
            '        API_KEY: "{{secrets/team/api-key}}"\n'
            "        PLAIN: visible\n",
        )
    )
    yield p
    p.declare("destroy", "--auto-approve", env=ENV)


def test_unset_secret_is_a_located_plan_error(project: CliProject) -> None:
    result = project.declare("plan")
    assert result.returncode == 1
    assert "iris.yaml:" in result.stderr
    assert "environment_vars.API_KEY" in result.stderr
    assert "DECLARE_SECRET_TEAM_API_KEY" in result.stderr


def test_secret_value_reaches_only_the_replica(project: CliProject, tmp_path: Path) -> None:
    outputs = []
    for args in (
        ("plan",),
        ("plan", "--json"),
        ("plan", "--out", str(tmp_path / "saved.plan")),
        ("apply", "--auto-approve"),
        ("show", "--json"),
        ("status", "--json"),
        ("plan", "--format", "markdown"),
    ):
        result = project.declare(*args, env=ENV)
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout + result.stderr)
    assert project.predict().status_code == 200
    outputs.append(
        httpx.get(project.url.split("/serving-endpoints")[0] + "/api/2.0/serving-endpoints").text
    )
    logs = project.declare("logs", "iris", "--project", str(project.folder), env=ENV)
    outputs.append(logs.stdout + logs.stderr)

    # Every file declare, its providers and its gateway wrote in the project folder.
    files = [p for p in project.folder.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".log") for p in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), f"secret value found in {path}"
    for text in outputs:
        assert SECRET not in text
    assert "{{secrets/team/api-key}}" in (tmp_path / "saved.plan").read_text()

    # The replica got its own secret, and not the others declare could see.
    (pid,) = project.recorded_pids()
    environ = Path(f"/proc/{pid.pid}/environ").read_bytes().split(b"\0")
    assert f"API_KEY={SECRET}".encode() in environ
    assert b"PLAIN=visible" in environ
    assert not any(OTHER.encode() in entry for entry in environ)
    # ... and of the rest of declare's environment only the allow-list and pass_env.
    assert b"MLFLOW_TRACKING_TOKEN=mlflow-token-for-replicas" in environ
    assert b"TEAM_REGION=eu-test-1" in environ
    assert not any(STRAY.encode() in entry for entry in environ)

    # The gateway holds no secret, no MLflow credential, nothing stray.
    gateway = Path(f"/proc/{project.gateway_pid().pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in gateway if entry}
    assert not {n for n in names if n.startswith(("DECLARE_SECRET_", "MLFLOW_"))}, names
    assert "UNRELATED_CLOUD_KEY" not in names and "TEAM_REGION" not in names, names
    assert "PATH" in names
