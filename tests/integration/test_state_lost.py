"""The state lost while the gateway runs: its settings are unknown, so the next apply
restarts it and records them, and a later settings change (end-user auth turned on) is a
change again, not "No changes" with auth silently off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import MlflowProject
from tests.support import IRIS_ROW, CliProject, manifest

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, mlflow_project: MlflowProject) -> Iterator[CliProject]:
    folder = tmp_path / "proj"
    folder.mkdir()
    p = CliProject(folder, mlflow_project.tracking_uri, "runtime:\n  enabled: false\n")
    p.write(manifest("iris", "1"))
    yield p
    p.declare("destroy", "--auto-approve", env={"SERVING_TOKEN": "t0ken"})
    p.stop_leftovers()


def test_a_gateway_with_unrecorded_settings_is_restarted_and_recorded(
    project: CliProject,
) -> None:
    applied = project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for path in (project.folder / "state").glob("declare.tfstate.json*"):
        path.unlink()  # the state is lost; the gateway and the replica run on

    plan = project.declare("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "stop the gateway (its settings are not recorded)" in plan.stdout, plan.stdout
    recovered = project.declare("apply", "--auto-approve")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert project.state()["gateway"] is not None
    assert project.declare("plan", "--detailed-exitcode").returncode == 0
    assert project.predict().status_code == 200

    # Turning end-user auth on is now a change, and applied it is enforced.
    config = project.folder / "declare.yaml"
    config.write_text(
        config.read_text().replace("gateway:\n", "gateway:\n  auth_token_env: SERVING_TOKEN\n")
    )
    env = {"SERVING_TOKEN": "t0ken"}
    changed = project.declare("plan", "--detailed-exitcode", env=env)
    assert changed.returncode == 2, changed.stdout + changed.stderr
    assert "stop the gateway (its settings changed)" in changed.stdout
    enforced = project.declare("apply", "--auto-approve", env=env)
    assert enforced.returncode == 0, enforced.stdout + enforced.stderr
    assert project.predict().status_code == 401
    authorized = httpx.post(
        project.url,
        json={"dataframe_split": IRIS_ROW},
        headers={"Authorization": "Bearer t0ken"},
        timeout=30,
    )
    assert authorized.status_code == 200
