"""What runs against what the state records, with no runtime to repair it in between.

The state lost while a gateway runs whose own record does not say what it was started with
(one started by a declare that did not record it): its settings are unknown, so the next
apply restarts it and records them, and a later settings change (end-user auth turned on)
is a change again, not "No changes" with auth silently off. The only replica killed: `status` says
NOT_READY and why, as the gateway sees it, not READY as recorded."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from declare import procs
from tests.integration.conftest import MlflowProject
from tests.integration.test_saved_plans import without_runtime
from tests.support import IRIS_ROW, CliProject, manifest

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, mlflow_project: MlflowProject) -> Iterator[CliProject]:
    """The saved-plan tests' project without the runtime (nothing repairs between
    commands), destroyed with the token one test turns on."""
    yield from without_runtime(tmp_path, mlflow_project, {"SERVING_TOKEN": "t0ken"})


def test_a_gateway_with_unrecorded_settings_is_restarted_and_recorded(
    project: CliProject,
) -> None:
    applied = project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for path in (project.folder / "state").glob("declare.tfstate.json*"):
        path.unlink()  # the state is lost; the gateway and the replica run on
    record = project.folder / "state" / "gateway" / "gateway.json"
    saved = json.loads(record.read_text())
    del saved["settings_hash"]  # as an older declare wrote it (test_state_loss: adopted)
    record.write_text(json.dumps(saved))

    plan = project.declare("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "(its settings are not recorded; the new one takes over" in plan.stdout, plan.stdout
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
    assert "restart the gateway on" in changed.stdout
    assert "(its settings changed; the new one takes over" in changed.stdout
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


def test_status_says_not_ready_when_the_only_replica_is_dead(project: CliProject) -> None:
    applied = project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    (victim,) = project.recorded_pids()
    os.killpg(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while procs.is_running(victim) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert project.predict().status_code == 503  # what a user gets
    shown = project.declare("status", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    (ep,) = json.loads(shown.stdout)["endpoints"]
    assert ep["state"]["ready"] == "NOT_READY"
    entity = ep["declare"]["entities"]["iris-1"]
    assert entity["replicas_in_rotation"] == 0
    assert entity["state"]["deployment"] == "DEPLOYMENT_RECOVERING"
    assert (
        "none of its 1 replica(s) in rotation runs" in entity["state"]["deployment_state_message"]
    )
    text = project.declare("status").stdout
    assert "iris: NOT_READY" in text and "0/1 replicas alive" in text, text


def test_an_endpoint_whose_first_apply_failed_gets_no_url(project: CliProject) -> None:
    project.write(manifest("broken", "1"))
    failed = project.declare("apply", "--auto-approve")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "model cannot load" in failed.stdout + failed.stderr
    assert "Invocation URLs" not in failed.stdout and project.url not in failed.stdout
    assert project.state()["endpoints"]["iris"]["status"]["config_update"] == "UPDATE_FAILED"
    # The gateway shows it as Databricks does, and refuses its invocations with 503, not 404.
    base = project.url.split("/serving-endpoints")[0]
    shown = httpx.get(f"{base}/api/2.0/serving-endpoints/iris", timeout=10)
    assert shown.status_code == 200, shown.text
    assert shown.json()["state"] == {"ready": "NOT_READY", "config_update": "UPDATE_FAILED",
                                     "config_update_message": shown.json()["state"].get(
                                         "config_update_message")}  # fmt: skip
    assert "model cannot load" in shown.json()["state"]["config_update_message"]
    assert project.predict().status_code == 503
