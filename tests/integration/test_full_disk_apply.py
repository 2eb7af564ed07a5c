"""An apply whose state writes fail (a full disk) right after it moved traffic, end to end:
the real CLI in a child process (`tests.integration.full_disk_apply`, which fills the
"disk" at the switch), the local provider's replica processes, the real gateway, and
continuous requests. The undo sends all traffic back before it stops the new replica, so no
request fails; the state file is the last good one; the output says what serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from declare import procs
from declare.state.local import TEMP_MARK
from tests.integration.full_disk_apply import GOOD_STATE_ENV
from tests.support import CliProject, Load, manifest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(cli_project: CliProject) -> CliProject:
    """`iris` v1 applied, with no runtime (so nothing else writes the state meanwhile)."""
    config = cli_project.folder / "declare.yaml"
    config.write_text(config.read_text() + "runtime:\n  enabled: false\n")
    cli_project.write(manifest("iris", "1"))
    applied = cli_project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    return cli_project


def full_disk_apply(project: CliProject, good_copy: Path) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(x for x in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if x)
    env = project.env({GOOD_STATE_ENV: str(good_copy), "PYTHONPATH": path})
    argv = [sys.executable, "-m", "tests.integration.full_disk_apply", "apply"]
    return subprocess.run(
        [*argv, "--auto-approve", str(project.folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO_ROOT,
    )


def test_a_full_disk_after_the_switch_fails_no_request(
    project: CliProject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    state_dir = project.folder / "state"
    (old,) = project.recorded_pids()
    project.write(manifest("iris", "2"))
    good_copy = tmp_path_factory.mktemp("copy") / "good.tfstate.json"  # not a manifest
    with Load(project.url, threads=2, max_requests=200_000) as load:
        time.sleep(1.0)  # traffic flows before the apply starts
        t0 = time.monotonic()
        failed = full_disk_apply(project, good_copy)
        seconds = time.monotonic() - t0
        time.sleep(1.0)  # and after it ended
    out = failed.stdout + failed.stderr
    print(
        f"\nfailed apply and its undo: {seconds:.1f}s, {load.sent} requests, {load.failed} "
        f"failed, served {dict(load.served)}, longest gap {load.longest_gap * 1000:.0f} ms"
    )
    assert failed.returncode == 1, out
    assert "No space left on device" in failed.stderr, out
    assert "undo: all traffic back to what served before" in failed.stdout, out
    assert "what ran before keeps serving" in failed.stderr, out
    assert "the state file still holds its last good version" in failed.stderr, out
    assert "Traceback" not in out
    lines = failed.stdout.splitlines()
    back = next(i for i, x in enumerate(lines) if "all traffic back" in x)
    stop = next(i for i, x in enumerate(lines) if "undo: stopping" in x)
    assert back < stop, failed.stdout

    assert load.failed == 0, load.results
    assert load.sent < 200_000 and load.longest_gap < 1.0  # it ran throughout, unhindered
    assert load.served["iris-2"] > 0, load.served  # traffic did move before the undo
    assert project.predict().headers["served-model-name"] == "iris-1"

    # The state file is the one from before the disk filled, and no temp file is left.
    assert (state_dir / "declare.tfstate.json").read_bytes() == good_copy.read_bytes()
    assert not list(state_dir.glob(f".*{TEMP_MARK}*"))
    recorded = json.loads(good_copy.read_text())["endpoints"]["iris"]
    assert [r["served_entity_name"] for r in recorded["routes"]] == ["iris-1"]
    # It still records the stopped v2 replica; the next plan forgets it.
    new = [p for p in project.recorded_pids() if p != old]
    assert procs.is_running(old) and new and not any(procs.is_running(p) for p in new)

    # Once the disk has room again, the same apply goes through.
    again = project.declare("apply", "--auto-approve")
    assert again.returncode == 0, again.stdout + again.stderr
    assert project.predict().headers["served-model-name"] == "iris-2"
    assert project.declare("plan", "--detailed-exitcode").returncode == 0
