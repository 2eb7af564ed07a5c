"""The runtime under systemd (`runtime.supervisor: systemd`): the unit `declare runtime unit`
writes, checked by the real `systemd-analyze verify` and run by the stand-in of
tests/systemd_unit.py (these sandboxes have no systemd manager), with real replicas, the real
gateway and the real runtime on 127.0.0.1.

What a user would see: apply hands the endpoints over and starts no runtime or keeper of its
own; the unit's `Restart=always` brings back a runtime SIGKILLed, which then heals; apply
refuses a runtime whose environment lacks what apply has, naming the variable, and hands over
once the unit's EnvironmentFile has it; destroy leaves the unit's runtime waiting, acting on
nothing.
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
from tests.integration.test_runtime_e2e import endpoint, replaced, status, wait_for
from tests.support import CliProject
from tests.systemd_unit import Unit, verify

pytestmark = pytest.mark.integration


class SystemdProject(CliProject):
    def __init__(self, folder: Path, tracking_uri: str) -> None:
        super().__init__(folder, tracking_uri, "runtime:\n  supervisor: systemd\n")
        self.config_home = folder.parent / "config-home"
        self.unit: Unit | None = None

    def install(self) -> Unit:
        """`declare runtime unit` into a file, verified by systemd, then started."""
        written = self.declare("runtime", "unit")
        assert written.returncode == 0, written.stdout + written.stderr
        path = self.folder.parent / "declare-iris-test.service"
        path.write_text(written.stdout)
        verify(path)
        self.unit = Unit(written.stdout, self.config_home, self.folder.parent / "unit.log")
        self.unit.start()
        return self.unit

    def runtime_record(self) -> dict[str, object]:
        path = self.folder / "state" / "runtime" / "runtime.json"
        data: dict[str, object] = json.loads(path.read_text())
        return data


@pytest.fixture
def project(tmp_path: Path, mlflow_project: MlflowProject) -> Iterator[SystemdProject]:
    folder = tmp_path / "project"
    folder.mkdir()
    p = SystemdProject(folder, mlflow_project.tracking_uri)
    yield p
    p.declare("destroy", "--auto-approve")
    if p.unit is not None:
        p.unit.stop()
    p.stop_leftovers()


def runtime_pid(project: SystemdProject) -> int | None:
    pids = project.runtime_pids()
    return pids[0].pid if pids and procs.is_running(pids[0]) else None


def test_the_runtime_under_systemd(project: SystemdProject) -> None:
    unit = project.install()
    first = unit.wait_for_start(0)

    project.write(endpoint("      workload_size: Small"))
    applied = project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "hand the endpoints to the runtime under systemd" in applied.stdout
    assert project.predict().status_code == 200
    # The unit's process runs the endpoints (a process started after the hand-over), no keeper.
    pid = wait_for("the unit's runtime", lambda: runtime_pid(project))
    assert pid == unit.pid and pid != first, (pid, unit.pid, first)
    assert project.runtime_record()["keeper"] is None
    shown = status(project)["runtime"]
    assert shown == {"running": True, "pid": pid, "keeper_pid": None, "supervisor": "systemd"}
    text = project.declare("status").stdout
    assert f"runtime: running (pid {pid}, supervised by systemd)" in text, text

    # SIGKILL of the runtime: the unit starts another, which takes the endpoints again ...
    starts = unit.starts
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    again = wait_for(
        "the runtime back",
        lambda: p if (p := runtime_pid(project)) and p != pid and p == unit.pid else None,
        timeout=30,
    )
    print(f"\nSIGKILL of the runtime under systemd: back in {time.monotonic() - killed:.2f} s")
    assert unit.starts == starts + 1
    assert project.runtime_pids() == [procs.ProcessId(again, procs.start_time_of(again) or 0)]
    # ... and heals: a replica killed is replaced with no apply
    (victim,) = project.recorded_pids()
    os.killpg(victim.pid, signal.SIGKILL)
    wait_for("a replacement", lambda: replaced(project, victim, 1))
    project.event("replace")

    # An environment apply has and the unit lacks: refused, named, and the endpoint serves on.
    secret = {"DECLARE_SECRET_DEMO": "demo-value-1"}
    refused = project.declare("apply", "--auto-approve", env=secret)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    out = refused.stdout + refused.stderr
    assert "missing DECLARE_SECRET_DEMO" in out and "EnvironmentFile" in out, out
    assert "demo-value-1" not in out and "Traceback" not in out, out
    assert project.predict().status_code == 200
    assert not status(project)["runtime"]["running"]
    # Once the unit's EnvironmentFile has it, the next apply hands over (to a new process).
    unit.env_file.parent.mkdir(parents=True, exist_ok=True)
    unit.env_file.write_text("DECLARE_SECRET_DEMO=demo-value-1\n")
    unit.env_file.chmod(0o600)
    apply_ok = project.declare("apply", "--auto-approve", env=secret)
    assert apply_ok.returncode == 0, apply_ok.stdout + apply_ok.stderr
    assert status(project)["runtime"]["supervisor"] == "systemd"
    record = project.runtime_record()
    assert record["env_names"] == ["DECLARE_SECRET_DEMO"]
    assert "demo-value-1" not in json.dumps(record)
    assert project.declare("plan", "--detailed-exitcode", env=secret).returncode == 0

    # destroy: nothing runs but the unit's runtime, which waits and acts on nothing.
    waiting = unit.pid
    destroyed = project.declare("destroy", "--auto-approve", env=secret)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert project.recorded_pids() == [] and project.runtime_pids() == []
    time.sleep(2.0)
    assert unit.pid is not None and unit.pid != waiting  # destroy stopped it; systemd: a new one
    assert project.state()["endpoints"] == {}
    assert not (project.folder / "state" / "runtime" / "runtime.json").exists()
