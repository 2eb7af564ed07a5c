"""Saved plans and Terraform's planning modes, through the real CLI and local provider.

`plan --out FILE` then `apply FILE` runs exactly the reviewed plan; a plan whose state or
world moved on is refused with what changed; `--target`, `--replace` and `--refresh-only`
do what Terraform users expect.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from declare import procs
from tests.integration.conftest import MlflowProject
from tests.support import CliProject, manifest


def without_runtime(
    tmp_path: Path, mlflow_project: MlflowProject, destroy_env: dict[str, str] | None = None
) -> Iterator[CliProject]:
    """A project serving iris v1 without the runtime, destroyed after the test."""
    folder = tmp_path / "proj"
    folder.mkdir()
    p = CliProject(folder, mlflow_project.tracking_uri, "runtime:\n  enabled: false\n")
    p.write(manifest("iris", "1"))
    yield p
    p.declare("destroy", "--auto-approve", env=destroy_env)
    p.stop_leftovers()


@pytest.fixture
def project(tmp_path: Path, mlflow_project: MlflowProject) -> Iterator[CliProject]:
    # Without the runtime: these tests kill replicas to see drift in saved plans and in
    # --refresh-only, which the runtime would repair first.
    yield from without_runtime(tmp_path, mlflow_project)


def _ok(result) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr


def _kill_and_wait(pid: procs.ProcessId) -> None:
    os.killpg(pid.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while procs.is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_saved_plan_applies_exactly_and_stale_ones_are_refused(
    project: CliProject, tmp_path: Path
) -> None:
    _ok(project.declare("apply", "--auto-approve"))
    project.write(manifest("iris", "2"))
    plan_file = tmp_path / "v2.plan"
    made = project.declare("plan", "--out", str(plan_file), "--detailed-exitcode")
    assert made.returncode == 2, made.stderr
    assert f"declare apply {plan_file}" in made.stdout
    doc = json.loads(plan_file.read_text())
    assert doc["format"] == "declare-plan" and doc["state"]["serial"] > 0

    shown = project.cli("show", str(plan_file))
    assert "endpoint.iris will be updated in-place" in shown.stdout
    md = project.cli("show", str(plan_file), "--format", "markdown")
    assert md.returncode == 0 and "1 to update" in md.stdout and "<details>" in md.stdout

    # The manifest moves on after the review; the saved plan still applies what was reviewed.
    project.write(manifest("iris", "1"))
    applied = project.cli("apply", str(plan_file), str(project.folder))
    _ok(applied)
    assert "Applying the saved plan" in applied.stdout
    assert project.predict().headers["served-model-name"] == "iris-2"

    # Applying it again: the state moved on since it was made.
    again = project.cli("apply", str(plan_file), str(project.folder))
    assert again.returncode == 1
    assert "is stale" in again.stderr and "the state moved on: serial" in again.stderr

    # A plan made, then a replica dies: what runs no longer matches what the plan saw.
    stale_file = tmp_path / "v1.plan"
    assert project.declare("plan", "--out", str(stale_file)).returncode == 0
    (victim,) = project.recorded_pids()
    _kill_and_wait(victim)
    refused = project.cli("apply", str(stale_file), str(project.folder))
    assert refused.returncode == 1
    assert "was alive when planned, is dead now" in refused.stderr, refused.stderr
    assert project.cli("show", str(tmp_path / "missing.plan")).returncode == 1


def test_target_replace_and_refresh_only(project: CliProject) -> None:
    project.write(
        manifest("iris", "1").replace("name: iris\nconfig", "name: other\nconfig"), "other.yaml"
    )
    _ok(project.declare("apply", "--auto-approve"))
    state = project.state()
    assert set(state["endpoints"]) == {"iris", "other"}

    # --target: only the named endpoint is planned and applied.
    project.write(manifest("iris", "2"))
    project.write(
        manifest("iris", "2").replace("name: iris\nconfig", "name: other\nconfig"), "other.yaml"
    )
    targeted = project.declare("plan", "--target", "iris")
    assert "endpoint.iris will be updated" in targeted.stdout
    assert "endpoint.other" not in targeted.stdout
    _ok(project.declare("apply", "--auto-approve", "--target", "iris"))
    eps = project.state()["endpoints"]
    assert eps["iris"]["routes"][0]["served_entity_name"] == "iris-2"
    assert eps["other"]["routes"][0]["served_entity_name"] == "iris-1"
    bad = project.declare("plan", "--target", "nope")
    assert bad.returncode == 1 and "no such endpoint" in bad.stderr

    # --replace: restart one entity's replicas though nothing changed.
    _ok(project.declare("apply", "--auto-approve"))
    before = {r["handle"]["id"] for r in project.state()["endpoints"]["iris"]["replicas"]}
    replaced = project.declare("apply", "--auto-approve", "--replace", "iris/iris-2")
    _ok(replaced)
    assert "replace requested" in replaced.stdout
    after = {r["handle"]["id"] for r in project.state()["endpoints"]["iris"]["replicas"]}
    assert before.isdisjoint(after) and len(after) == 1
    assert project.declare("plan", "--detailed-exitcode").returncode == 0

    # --refresh-only: a replica died outside declare; the state forgets it, nothing starts.
    victim = next(
        procs.ProcessId.from_json(r["handle"]["data"])
        for r in project.state()["endpoints"]["other"]["replicas"]
    )
    _kill_and_wait(victim)
    refresh = project.declare("plan", "--refresh-only", "--detailed-exitcode")
    assert refresh.returncode == 2
    assert "forget replica" in refresh.stdout and "start replica" not in refresh.stdout
    _ok(project.declare("apply", "--auto-approve", "--refresh-only"))
    assert project.state()["endpoints"]["other"]["replicas"] == []
    assert project.state()["endpoints"]["other"]["status"]["config_update"] == "NOT_UPDATING"
    # The normal plan now proposes to start the missing replica.
    repair = project.declare("plan", "--detailed-exitcode")
    assert repair.returncode == 2 and "start replica" in repair.stdout
