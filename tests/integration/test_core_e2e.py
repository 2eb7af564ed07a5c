"""The core path end to end, as a user runs it: the `declare` CLI in a child process, a real
MLflow registry, real replica processes, the real gateway, real HTTP on 127.0.0.1.

One project walks through: plan (exit 2) -> apply -> predict -> plan (exit 0) -> version
change under continuous requests (none may fail) -> a version that cannot load (old one
keeps serving, UPDATE_FAILED, exit 1) -> a replica killed out of band (drift, repaired) ->
destroy (no process left).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from declare import procs
from tests.support import CliProject, Load, manifest


@pytest.fixture
def project(cli_project: CliProject) -> CliProject:
    """The project of `iris` v1 (the cli_project fixture destroys it whatever happens)."""
    cli_project.write(manifest("iris", "1"))
    return cli_project


def test_core_lifecycle(project: CliProject) -> None:
    # -- plan before apply: changes present
    plan = project.declare("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "endpoint.iris will be created" in plan.stdout
    assert "iris v1" in plan.stdout

    # -- apply, then a real prediction through the gateway
    t0 = time.monotonic()
    applied = project.declare("apply", "--auto-approve")
    apply_seconds = time.monotonic() - t0
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert project.url in applied.stdout
    r = project.predict()
    assert r.status_code == 200 and r.headers["served-model-name"] == "iris-1"
    assert "predictions" in r.json()
    print(f"\napply of one endpoint (cold): {apply_seconds:.1f}s")

    # -- `declare query`: the model's input example through the gateway, and a bad body
    queried = project.declare("query", "iris")
    assert queried.returncode == 0, queried.stdout + queried.stderr
    assert queried.stdout.startswith("HTTP 200 from iris-1") and "predictions" in queried.stdout
    bad = subprocess.run(
        project.argv("query", "iris", "--data", "-"),
        input='{"dataframe_split": {"columns": ["nope"], "data": [[1]]}}',
        capture_output=True,
        text=True,
        timeout=60,
        env=project.env(),
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert bad.stdout.startswith("HTTP 400 from iris-1"), bad.stdout
    assert "error_code" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr

    # -- right after apply: no changes
    again = project.declare("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes." in again.stdout

    # -- version change under continuous requests: none fails
    (project.folder / "iris.yaml").write_text(manifest("iris", "2"))
    old_pids = project.recorded_pids()
    with Load(project.url) as load:
        time.sleep(1.0)  # traffic flows before the change starts
        t0 = time.monotonic()
        changed = project.declare("apply", "--auto-approve")
        change_seconds = time.monotonic() - t0
        time.sleep(1.0)  # and after it ends
    assert changed.returncode == 0, changed.stdout + changed.stderr
    print(
        f"version change: {change_seconds:.1f}s, {load.sent} requests, {load.failed} failed, "
        f"served {dict(load.served)}"
    )
    assert load.failed == 0, load.results
    assert load.served["iris-1"] > 0 and load.served["iris-2"] > 0
    assert project.predict().headers["served-model-name"] == "iris-2"
    assert not any(procs.is_running(p) for p in old_pids), "old replica still running"

    # -- a version whose model cannot load: old keeps serving, UPDATE_FAILED, exit 1
    (project.folder / "iris.yaml").write_text(manifest("broken", "1"))
    with Load(project.url, threads=2) as load:
        failed = project.declare("apply", "--auto-approve")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "model cannot load" in failed.stderr + failed.stdout
    assert load.failed == 0, load.results
    assert project.predict().headers["served-model-name"] == "iris-2"
    ep = project.state()["endpoints"]["iris"]
    assert ep["status"]["config_update"] == "UPDATE_FAILED"
    assert "model cannot load" in ep["status"]["message"]
    assert [r["served_entity_name"] for r in ep["routes"]] == ["iris-2"]
    assert len(ep["replicas"]) == 1  # the broken replica was cleaned up
    mgmt = httpx.get(f"http://127.0.0.1:{project.port}/api/2.0/serving-endpoints/iris").json()
    assert mgmt["state"]["config_update"] == "UPDATE_FAILED"
    assert mgmt["state"]["ready"] == "READY"
    # The manifest still asks for it, so the next plan proposes it again.
    assert project.declare("plan", "--detailed-exitcode").returncode == 2

    # -- a replica killed out of band: the runtime replaces it, no apply needed
    (project.folder / "iris.yaml").write_text(manifest("iris", "2"))
    (victim,) = project.recorded_pids()
    os.killpg(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = project.recorded_pids()
        if pids and victim not in pids and all(procs.is_running(p) for p in pids):
            break
        time.sleep(0.2)
    assert victim not in project.recorded_pids()
    assert project.predict().status_code == 200
    replaced = project.event("replace")
    assert "not running" in replaced["detail"], project.events()
    # Nothing is left to repair; the manifest's return to v2 still settles the failed update.
    settle = project.declare("plan")
    assert "drift" not in settle.stdout and "will be created" not in settle.stdout, settle.stdout
    settled = project.declare("apply", "--auto-approve")
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert project.declare("plan", "--detailed-exitcode").returncode == 0

    # -- destroy: no process left (replicas, gateway, runtime), state empty
    pids = project.recorded_pids() + project.runtime_pids()
    assert len(project.runtime_pids()) == 2
    gateway = project.gateway_pid()
    destroyed = project.declare("destroy", "--auto-approve")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert not any(procs.is_running(p) for p in [*pids, gateway])
    assert project.state()["endpoints"] == {}
    assert project.provider_records() == []
    with pytest.raises(httpx.ConnectError):
        project.predict()
