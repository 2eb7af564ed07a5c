"""The state lost while replicas serve under load, then `apply`.

A replica that runs, answers and matches the manifest is adopted (Terraform's import, done by
the refresh): recorded, not stopped, not replaced, and the gateway keeps serving it. A
replica that runs but no longer matches (the manifest moved to another version meanwhile) is
replaced with the usual switch: it keeps serving until its replacement is in rotation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from declare import procs
from tests.integration.conftest import MlflowProject
from tests.integration.test_saved_plans import without_runtime
from tests.support import CliProject, Load, manifest

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, mlflow_project: MlflowProject) -> Iterator[CliProject]:
    """iris v1 without the runtime (nothing repairs between commands)."""
    yield from without_runtime(tmp_path, mlflow_project)


def _ok(result) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr


def _lose_state(project: CliProject) -> None:
    for path in (project.folder / "state").glob("declare.tfstate.json*"):
        path.unlink()  # the gateway and the replica run on


def _apply_under_load(project: CliProject) -> tuple[Load, str]:
    with Load(project.url, threads=4, max_requests=20_000, max_seconds=200) as load:
        time.sleep(1.0)
        applied = project.declare("apply", "--auto-approve")
        time.sleep(1.0)
    _ok(applied)
    print(f"\n[state loss] sent {load.sent}, failed {load.failed}: {dict(load.results)}")
    print(applied.stdout)
    return load, applied.stdout


def test_a_matching_replica_is_adopted_without_a_failed_request(project: CliProject) -> None:
    _ok(project.declare("apply", "--auto-approve"))
    (before,) = project.recorded_pids()
    _lose_state(project)

    load, shown = _apply_under_load(project)
    assert load.sent > 0
    assert load.failed == 0, dict(load.results)
    assert "adopt replica" in shown and "matches the manifest" in shown, shown
    assert "adopt the gateway" in shown, shown
    assert "stop orphan" not in shown and "start replica" not in shown, shown
    assert "stop the gateway" not in shown, shown
    assert project.recorded_pids() == [before]  # adopted: the same process, recorded
    assert procs.is_running(before)
    (replica,) = project.state()["endpoints"]["iris"]["replicas"]
    assert replica["ready"] and not replica["retired"]
    again = project.declare("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout, again.stdout


def test_a_mismatched_replica_serves_until_its_replacement_is_in_rotation(
    project: CliProject,
) -> None:
    _ok(project.declare("apply", "--auto-approve"))
    (old,) = project.recorded_pids()
    _lose_state(project)
    project.write(manifest("iris", "2"))

    load, shown = _apply_under_load(project)
    assert load.failed == 0, dict(load.results)
    assert "the gateway routes it now; it stops after the switch of iris" in shown, shown
    assert "adopt replica" not in shown, shown
    assert load.served["iris-1"] > 0 and load.served["iris-2"] > 0
    (new,) = project.recorded_pids()
    assert new != old
    assert not procs.is_running(old)
    again = project.declare("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_with_the_runtime_nothing_stops_between_the_loss_and_the_apply(
    cli_project: CliProject,
) -> None:
    """The runtime (on by default) finds the state lost first: it stops nothing."""
    project = cli_project
    project.write(manifest("iris", "1"))
    _ok(project.declare("apply", "--auto-approve"))
    (before,) = project.recorded_pids()
    _lose_state(project)
    with Load(project.url, threads=4, max_requests=20_000, max_seconds=200) as load:
        time.sleep(5.0)  # the runtime looks several times at a state that is not there
        applied = project.declare("apply", "--auto-approve")
        time.sleep(1.0)
    _ok(applied)
    print(f"\n[state loss, runtime] sent {load.sent}, failed {load.failed}: {dict(load.results)}")
    assert load.failed == 0, dict(load.results)
    assert "adopt replica" in applied.stdout, applied.stdout
    assert project.recorded_pids() == [before] and procs.is_running(before)
    again = project.declare("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
