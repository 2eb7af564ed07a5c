"""The reliability suite: continuous requests on 127.0.0.1 while declare changes what serves.

(a) a version change, (b) a canary that passes, (c) a canary whose new model errors on a
share of inputs and is rolled back by its guard, (d) a version whose model fails to load,
(e) a replica killed mid-load, (f) `declare apply` SIGKILLed at several points, then run
again. Loads are bounded in requests and time; every process is stopped by its recorded
identity. The table of requests sent and failed per scenario prints at the end of the run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

from declare import procs
from tests.reliability.conftest import record
from tests.support import CliProject, Load, manifest

CANARY = """\
rollout:
  strategy: canary
  steps: [25, 50, 100]
  bake_seconds: {bake}
  guards:
    max_error_rate: 0.05
    min_requests: {min_requests}
  deadline_seconds: 300
"""


def _apply(project: CliProject) -> subprocess.CompletedProcess[str]:
    return project.declare("apply", "--auto-approve")


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def _converged(project: CliProject) -> None:
    """The next plan has nothing to do, and nothing runs that the state does not know."""
    plan = project.declare("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    recorded = {
        r["handle"]["id"] for ep in project.state()["endpoints"].values() for r in ep["replicas"]
    }
    running = {r["id"] for r in project.provider_records()}
    assert running == recorded


def test_a_version_change(project: CliProject) -> None:
    _ok(_apply(project))
    project.write(manifest("iris", "2"))
    with Load(project.url) as load:
        time.sleep(1)
        result = _apply(project)
        time.sleep(1)
    _ok(result)
    record(
        "(a) version change",
        load.sent,
        load.failed,
        f"now {project.predict().headers['served-model-name']}",
    )
    assert load.failed == 0, load.results
    assert load.served["iris-1"] and load.served["iris-2"]


def test_b_canary_that_passes(project: CliProject) -> None:
    _ok(_apply(project))
    project.write(manifest("iris", "2", rollout=CANARY.format(bake=3, min_requests=10)))
    plan = project.declare("plan")
    assert "shift traffic, step 1/3 (25% to the new config)" in plan.stdout
    assert "rollout  = canary 25% -> 50% -> 100%" in plan.stdout
    with Load(project.url) as load:
        time.sleep(1)
        result = _apply(project)
        time.sleep(1)
    _ok(result)
    assert result.stdout.count("guards pass") == 3
    record("(b) canary that passes", load.sent, load.failed, "promoted to iris-2")
    assert load.failed == 0, load.results
    assert project.predict().headers["served-model-name"] == "iris-2"
    _converged(project)


def test_c_canary_rolled_back_by_its_guard(project: CliProject) -> None:
    _ok(_apply(project))
    project.write(manifest("flaky", "1", rollout=CANARY.format(bake=20, min_requests=20)))
    with Load(project.url) as load:
        time.sleep(1)
        result = project.declare("apply", "--auto-approve")
        rolled_back = time.monotonic()
        time.sleep(2)
    assert result.returncode == 1, result.stdout + result.stderr
    ep = project.state()["endpoints"]["iris"]
    message = ep["status"]["message"]
    assert ep["status"]["config_update"] == "UPDATE_FAILED"
    assert "rollout guard tripped at step 1/3" in message
    tripped = re.search(r"\((\d+) of (\d+) requests\)", message)
    assert tripped, message
    errors_seen = int(tripped[1])
    # Every failure came from the canary, none after the rollback, and no more than the
    # guard let through before it judged (its figures plus the requests of one more poll).
    assert set(load.failed_by_entity) == {"flaky-1"}, load.failed_by_entity
    assert all(t <= rolled_back for t in load.failure_times)
    assert load.failed <= errors_seen * 2 + 20, (load.failed, message)
    assert project.predict().headers["served-model-name"] == "iris-1"
    assert len(ep["replicas"]) == 1
    record(
        "(c) canary rolled back",
        load.sent,
        load.failed,
        f"guard tripped ({errors_seen} errors seen), back on iris-1",
    )
    # The manifest still asks for it: the next plan proposes it again.
    assert project.declare("plan", "--detailed-exitcode").returncode == 2


def test_d_version_that_cannot_load(project: CliProject) -> None:
    _ok(_apply(project))
    project.write(manifest("broken", "1"))
    with Load(project.url) as load:
        time.sleep(1)
        result = _apply(project)
        time.sleep(1)
    assert result.returncode == 1
    assert "model cannot load" in result.stderr
    record("(d) model fails to load", load.sent, load.failed, "old version kept, UPDATE_FAILED")
    assert load.failed == 0, load.results
    assert project.predict().headers["served-model-name"] == "iris-1"


def test_e_replica_killed_mid_load(project: CliProject) -> None:
    project.write(manifest("iris", "1", size="Medium"))  # 2 replicas
    _ok(_apply(project))
    victim, survivor = project.recorded_pids()
    with Load(project.url) as load:
        time.sleep(2)
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + 120
        while time.monotonic() < deadline:
            pids = project.recorded_pids()
            if len(pids) == 2 and victim not in pids and all(map(procs.is_running, pids)):
                break
            time.sleep(0.1)
        back = time.monotonic() - killed
        time.sleep(1)
    assert procs.is_running(survivor)
    assert victim not in project.recorded_pids(), "the runtime did not replace the replica"
    record(
        "(e) replica killed mid-load",
        load.sent,
        load.failed,
        f"retried on the other; the runtime replaced it in {back:.1f} s, no apply",
    )
    assert load.failed == 0, load.results
    _converged(project)


KILL_POINTS = (
    ("after a replica started", r"replica\[0\]\.start: done"),
    ("after it answered", r"replica\[0\]\.ready: done"),
    ("after the switch", r"endpoint\.iris\.routes: done"),
    ("after the drain", r"endpoint\.iris\.drain: done"),
)


def test_f_apply_killed_at_several_points(project: CliProject) -> None:
    _ok(_apply(project))
    version = 1
    total_sent = total_failed = 0
    for label, marker in KILL_POINTS:
        version = 3 - version
        project.write(manifest("iris", str(version)))
        with Load(project.url, threads=2) as load:
            proc = subprocess.Popen(
                project.argv("apply", "--auto-approve"),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=project.env({"PYTHONUNBUFFERED": "1"}),
            )
            assert proc.stdout is not None
            seen = ""
            for line in proc.stdout:
                seen += line
                if re.search(marker, line):
                    proc.send_signal(signal.SIGKILL)
                    break
            proc.wait(timeout=120)
            assert proc.returncode == -signal.SIGKILL, f"{label}: marker never seen\n{seen}"
            # The state the kill left is readable, and the next apply converges.
            plan = project.declare("plan")
            assert plan.returncode == 0, f"{label}: {plan.stdout}{plan.stderr}"
            _ok(_apply(project))
        _converged(project)
        assert project.predict().headers["served-model-name"] == f"iris-{version}"
        total_sent += load.sent
        total_failed += load.failed
        record(f"(f) apply SIGKILLed {label}", load.sent, load.failed, "converged, no orphan")
    assert total_failed == 0


def test_second_apply_waits_for_the_lock_then_names_the_holder(project: CliProject) -> None:
    _ok(_apply(project))
    # A canary that bakes 8 s holds the lock that long, however fast replicas start.
    bake = "rollout:\n  strategy: canary\n  steps: [50, 100]\n  bake_seconds: 8\n"
    project.write(manifest("iris", "2", rollout=bake))
    first = subprocess.Popen(
        project.argv("apply", "--auto-approve"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=project.env({"PYTHONUNBUFFERED": "1"}),
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if "start: " in line:
                break
        t0 = time.monotonic()
        second = project.declare("apply", "--auto-approve", "--lock-timeout", "2s")
        waited = time.monotonic() - t0
        assert second.returncode == 1
        assert "apply" in second.stderr and str(first.pid) in second.stderr
        assert "force-unlock" in second.stderr
        assert waited >= 2
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0


def test_g_rollout_past_its_deadline_rolls_back(project: CliProject) -> None:
    _ok(_apply(project))
    slow = (
        "rollout:\n  strategy: canary\n  steps: [50, 100]\n"
        "  bake_seconds: 60\n  deadline_seconds: 15\n"
    )
    project.write(manifest("iris", "2", rollout=slow))
    with Load(project.url, threads=2) as load:
        t0 = time.monotonic()
        result = _apply(project)
        took = time.monotonic() - t0
        time.sleep(1)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rollout deadline passed" in result.stderr
    assert took < 60, "the bake was not cut short by the deadline"
    ep = project.state()["endpoints"]["iris"]
    assert ep["status"]["config_update"] == "UPDATE_FAILED"
    assert [r["served_entity_name"] for r in ep["routes"]] == ["iris-1"]
    assert project.predict().headers["served-model-name"] == "iris-1"
    record("(g) rollout past its deadline", load.sent, load.failed, "rolled back to iris-1")
    assert load.failed == 0, load.results
