"""The runtime with real replicas: the `declare` CLI in child processes, real MLflow scoring
servers (local provider), the real gateway and the real runtime process with its keeper,
real HTTP on 127.0.0.1, short timings (seconds, not minutes).

Self-healing: a replica killed under load (one replica, two replicas), the gateway killed,
the runtime and its keeper killed, a replica that dies at every start (backed off and
reported). Elastic: scale up under load and down after a quiet period, scale to zero and
back with the first request answered, a held request past its hold answered 503. Kills while
it scales: the runtime, the replica it is starting, and an apply that raises a range.

Each test prints its figures (requests, failures, the longest stretch without a 200, times
to recover) and adds them to the reliability table printed at the end of a run that has
tests/reliability too; load is bounded in requests and time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from declare import procs
from tests.reliability.conftest import record
from tests.support import CliProject, Load

pytestmark = pytest.mark.integration

T = TypeVar("T")


def endpoint(sizing: str, autoscaling: str = "") -> str:
    """Endpoint `iris` serving iris v1 at 100 %, sized by `sizing` (entity fields)."""
    return f"""\
name: iris
config:
  served_entities:
    - entity_name: iris
      entity_version: "1"
{sizing}
  traffic_config:
    routes:
      - served_model_name: iris-1
        traffic_percentage: 100
{autoscaling}"""


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def apply(project: CliProject, text: str) -> None:
    project.write(text)
    applied = project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr


def live(project: CliProject) -> list[procs.ProcessId]:
    """The replicas the state records, when every one of them runs."""
    pids = project.recorded_pids()
    return pids if all(procs.is_running(p) for p in pids) else []


def replaced(project: CliProject, victim: procs.ProcessId, count: int) -> list[procs.ProcessId]:
    pids = live(project)
    return pids if len(pids) == count and victim not in pids else []


def kinds(project: CliProject) -> list[str]:
    return [e["kind"] for e in project.events()]


def status(project: CliProject) -> dict[str, Any]:
    shown = project.declare("status", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


def entity_status(project: CliProject) -> dict[str, Any]:
    (ep,) = status(project)["endpoints"]
    found: dict[str, Any] = ep["declare"]["entities"]["iris-1"]
    return found


def get_shape(project: CliProject) -> dict[str, Any]:
    url = f"http://127.0.0.1:{project.port}/api/2.0/serving-endpoints/iris"
    data: dict[str, Any] = httpx.get(url, timeout=10).json()
    return data


def kill_under_load(project: CliProject, count: int) -> Load:
    """SIGKILL one of `count` replicas under 4 clients; the load runs until a replacement
    is in rotation and 2 s more."""
    victim = project.recorded_pids()[0]
    with Load(project.url, threads=4, max_requests=20_000, max_seconds=120) as load:
        time.sleep(2)
        os.killpg(victim.pid, signal.SIGKILL)
        wait_for("a replacement", lambda: replaced(project, victim, count))
        wait_for("a 200 after the kill", lambda: project.predict().status_code == 200)
        time.sleep(2)
    print(
        f"\nSIGKILL of 1 of {count} replica(s) under load: {load.sent} requests, "
        f"{load.failed} failed {dict(load.results)}, longest stretch without a 200 "
        f"{load.longest_gap:.2f} s"
    )
    record(
        "(h) the only replica SIGKILLed" if count == 1 else "(i) 1 of 2 replicas SIGKILLed",
        load.sent,
        load.failed,
        f"replaced by the runtime; longest stretch without a 200 {load.longest_gap:.2f} s",
    )
    return load


def test_a_killed_only_replica_is_replaced_under_load(cli_project: CliProject) -> None:
    apply(cli_project, endpoint("      workload_size: Small"))
    load = kill_under_load(cli_project, 1)
    # Requests are held while the replacement starts: at most those in flight on the
    # replica when it died can fail.
    assert load.failed <= 4, dict(load.results)
    event = cli_project.event("replace")
    assert len([e for e in cli_project.events() if e["kind"] == "replace"]) == 1
    assert "not running" in event["detail"] or "killed" in event["detail"], event
    assert cli_project.declare("plan", "--detailed-exitcode").returncode == 0
    logs = cli_project.cli("logs", "iris", "-C", str(cli_project.folder))
    assert "==> runtime events <==" in logs.stdout and "replace" in logs.stdout


def test_a_killed_replica_of_two_fails_no_request(cli_project: CliProject) -> None:
    apply(cli_project, endpoint("      workload_size: Small\n      replicas: 2"))
    load = kill_under_load(cli_project, 2)
    assert load.failed == 0, dict(load.results)
    assert len(live(cli_project)) == 2


def test_a_killed_gateway_is_started_again(cli_project: CliProject) -> None:
    apply(cli_project, endpoint("      workload_size: Small"))
    gateway = cli_project.gateway_pid()
    with Load(cli_project.url, threads=2, max_requests=20_000, max_seconds=120) as load:
        time.sleep(1)
        killed = time.monotonic()
        os.kill(gateway.pid, signal.SIGKILL)
        # An answer already in the socket when the gateway died may still arrive as a 200:
        # wait for the runtime's new gateway first, then for a 200 that it answered.
        wait_for("a new gateway recorded", lambda: cli_project.gateway_pid() != gateway)
        started = time.monotonic()
        wait_for("a 200 from the new gateway", lambda: load.ok_times[-1] > started)
        back = load.ok_times[-1] - killed
        time.sleep(1)
    print(
        f"\nSIGKILL of the gateway: answering again after {back:.2f} s; {load.sent} "
        f"requests, {load.failed} refused {dict(load.results)}, longest stretch without a "
        f"200 {load.longest_gap:.2f} s"
    )
    record(
        "(j) the gateway SIGKILLed",
        load.sent,
        load.failed,
        f"started again by the runtime; connections refused for {load.longest_gap:.2f} s",
    )
    assert cli_project.gateway_pid() != gateway
    assert procs.is_running(cli_project.gateway_pid())
    # only connections were refused while it was down: no request got a wrong answer
    assert set(load.results) <= {"200", "ConnectError", "RemoteProtocolError", "ReadError"}
    assert status(cli_project)["gateway"] == "running"


def test_the_runtime_and_its_keeper_bring_each_other_back(cli_project: CliProject) -> None:
    apply(cli_project, endpoint("      workload_size: Small"))
    runtime, keeper = cli_project.runtime_pids()
    os.kill(runtime.pid, signal.SIGKILL)
    started = time.monotonic()
    new_runtime, _ = wait_for(
        "a new runtime",
        lambda: (
            pids
            if len(pids := cli_project.runtime_pids()) == 2
            and pids[0] != runtime
            and all(procs.is_running(p) for p in pids)
            else None
        ),
        timeout=30,
    )
    again = time.monotonic() - started
    print(f"\nSIGKILL of the runtime: its keeper started another in {again:.2f} s")
    os.kill(keeper.pid, signal.SIGKILL)
    wait_for(
        "a new keeper",
        lambda: (
            len(pids := cli_project.runtime_pids()) == 2
            and pids[1] != keeper
            and procs.is_running(pids[1])
        ),
        timeout=30,
    )
    assert cli_project.runtime_pids()[0] == new_runtime
    shown = status(cli_project)["runtime"]
    assert shown["running"] and shown["pid"] == new_runtime.pid
    # and the runtime that came back heals
    (victim,) = cli_project.recorded_pids()
    os.killpg(victim.pid, signal.SIGKILL)
    wait_for("a replacement", lambda: replaced(cli_project, victim, 1))


def test_a_replica_that_dies_at_every_start_is_backed_off_and_reported(
    cli_project: CliProject,
) -> None:
    apply(cli_project, endpoint("      workload_size: Small"))
    killed: list[procs.ProcessId] = []
    for _ in range(3):  # each one dies right after its start (within stable_seconds)
        (victim,) = wait_for("a replica", lambda: live(cli_project), timeout=120)
        os.killpg(victim.pid, signal.SIGKILL)
        killed.append(victim)
        wait_for("the crash recorded", lambda: kinds(cli_project).count("crash") >= len(killed))
    ent = entity_status(cli_project)
    print(f"\na replica that dies at every start, after 3 deaths: {ent['state']}")
    assert ent["state"]["deployment"] == "DEPLOYMENT_RECOVERING"
    assert "crash loop: 3 failures in a row" in ent["state"]["deployment_state_message"]
    assert "next attempt at" in ent["state"]["deployment_state_message"]
    served = get_shape(cli_project)["config"]["served_entities"][0]["state"]
    assert served["deployment"] == "DEPLOYMENT_RECOVERING"
    logs = cli_project.cli("logs", "iris", "-C", str(cli_project.folder))
    assert "crash: crash loop" in logs.stdout
    # no tight loop: the backoff (5 s, then 10 s) spaces the attempts
    starts = [e for e in cli_project.events() if e["kind"] == "crash"]
    assert starts[-1]["at"] - starts[0]["at"] >= 5.0
    # it still comes back once it stays up
    wait_for("a replica after the backoff", lambda: live(cli_project), timeout=60)
    assert cli_project.predict().status_code == 200


SCALING = """\
autoscaling:
  scale_down_after_seconds: 3
"""


def test_scale_up_under_load_and_down_after_quiet(cli_project: CliProject) -> None:
    apply(
        cli_project,
        endpoint(
            "      min_provisioned_concurrency: 4\n      max_provisioned_concurrency: 12",
            SCALING,
        ),
    )
    assert len(live(cli_project)) == 1
    most = 1
    with Load(cli_project.url, threads=16, max_requests=40_000, max_seconds=90) as load:
        started = time.monotonic()

        def scaled() -> int | None:
            nonlocal most
            most = max(most, len(live(cli_project)))
            return most if most >= 2 else None

        wait_for("a second replica in rotation", scaled, timeout=60)
        up = time.monotonic() - started
        time.sleep(3)
        most = max(most, len(live(cli_project)))
    print(
        f"\nstep to 16 clients: {most} replicas, the 2nd in rotation {up:.2f} s after the "
        f"step; {load.sent} requests, {load.failed} failed"
    )
    record(
        "(k) step to 16 clients, range 1..3",
        load.sent,
        load.failed,
        f"2nd replica in rotation {up:.2f} s after the step; {most} at most",
    )
    assert load.failed == 0, dict(load.results)
    assert "scale" in kinds(cli_project)
    assert entity_status(cli_project)["range"] == "1..3"
    wait_for("back to one replica", lambda: len(live(cli_project)) == 1, timeout=60)
    downs = [e["detail"] for e in cli_project.events() if "scale down" in e["detail"]]
    # the most it ran, from its own records (sampling live() can miss a short-lived top)
    highest = max(
        int(m) for e in cli_project.events() for m in re.findall(r"-> (\d+)", e["detail"])
    )
    assert len(downs) == highest - 1, downs  # one replica at a time
    # a count inside the range is not a change for plan
    assert cli_project.declare("plan", "--detailed-exitcode").returncode == 0


TO_ZERO = "      workload_size: Small\n      scale_to_zero_enabled: true"


def test_scale_to_zero_and_back(cli_project: CliProject) -> None:
    zero = "autoscaling:\n  scale_to_zero_after_seconds: 3\n"
    apply(
        cli_project, endpoint("      workload_size: Small\n      scale_to_zero_enabled: true", zero)
    )
    wait_for("zero replicas", lambda: cli_project.recorded_pids() == [], timeout=60)
    ent = entity_status(cli_project)
    assert ent["replicas_in_rotation"] == 0 and ent["target"] == 0
    assert "scaled to zero since" in ent["state"]["deployment_state_message"]
    shown = cli_project.declare("status")
    assert "scaled to zero since" in shown.stdout
    shape = get_shape(cli_project)
    assert shape["state"]["ready"] == "READY"
    assert cli_project.declare("plan", "--detailed-exitcode").returncode == 0

    started = time.monotonic()
    first = cli_project.predict()
    woke = time.monotonic() - started
    print(f"\nfirst response after scale to zero: {first.status_code} in {woke:.2f} s")
    record("(l) first request after scale to zero", 1, int(first.status_code != 200),
           f"held, answered {first.status_code} after {woke:.2f} s")  # fmt: skip
    assert first.status_code == 200, first.text
    assert "predictions" in first.json()
    assert len(live(cli_project)) == 1
    assert "wake" in kinds(cli_project)


def test_a_held_request_past_its_hold_gets_503(cli_project: CliProject) -> None:
    policy = "autoscaling:\n  scale_to_zero_after_seconds: 2\n  hold_seconds: 0.05\n"
    apply(
        cli_project,
        endpoint("      workload_size: Small\n      scale_to_zero_enabled: true", policy),
    )
    wait_for("zero replicas", lambda: cli_project.recorded_pids() == [], timeout=60)
    refused = cli_project.predict()
    assert refused.status_code == 503, refused.text
    assert refused.headers.get("Retry-After")
    assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "waited" in refused.json()["message"]
    # the request still woke the entity: the next ones are answered
    wait_for("a replica after the wake", lambda: live(cli_project), timeout=60)
    assert wait_for("a 200", lambda: cli_project.predict().status_code == 200)


def new_replica(project: CliProject, known: set[str]) -> procs.ProcessId | None:
    """A replica process the provider started that is not in `known` (it may not answer
    yet): what the runtime is scaling up with."""
    for path in (project.folder / "state" / "local" / "replicas").glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written
        if data["id"] not in known:
            return procs.ProcessId.from_json(data["process"])
    return None


def in_rotation(project: CliProject) -> int:
    """Recorded replicas that answered their readiness check, are not retired, and run."""
    return sum(
        1
        for r in project.state()["endpoints"]["iris"]["replicas"]
        if r["ready"]
        and not r["retired"]
        and procs.is_running(procs.ProcessId.from_json(r["handle"]["data"]))
    )


def converged(project: CliProject) -> bool:
    """Nobody acts (the state is not locked), what runs is what the state records (no
    orphan, nothing dead), every recorded replica answered its readiness check, and as many
    run as the runtime's target."""
    if (project.folder / "state" / "declare.tfstate.lock.json").exists():
        return False
    ep = project.state()["endpoints"]["iris"]
    replicas = ep["replicas"]
    recorded = {r["handle"]["id"] for r in replicas}
    running = {r["id"] for r in project.provider_records()}
    ready = all(r["ready"] and not r["retired"] for r in replicas)
    target = ep.get("scale", {}).get("iris-1", {}).get("target", len(replicas))
    return recorded == running and ready and len(live(project)) == target > 0


@pytest.mark.parametrize("victim", ["the runtime", "the replica it starts"])
def test_a_kill_while_the_runtime_scales_up_loses_nothing(
    cli_project: CliProject, victim: str
) -> None:
    apply(
        cli_project,
        endpoint(
            "      min_provisioned_concurrency: 4\n      max_provisioned_concurrency: 12",
            SCALING,
        ),
    )
    known = {r["id"] for r in cli_project.provider_records()}
    runtime_before = cli_project.runtime_pids()[0]
    with Load(cli_project.url, threads=16, max_requests=40_000, max_seconds=90) as load:
        scaling = wait_for("a replica being started", lambda: new_replica(cli_project, known))
        target = runtime_before if victim == "the runtime" else scaling
        os.kill(target.pid, signal.SIGKILL)
        killed = time.monotonic()
        # The runtime (started again by its keeper when it was the victim) scales up all the
        # same: two replicas answer while the load goes on.
        wait_for("two replicas in rotation", lambda: in_rotation(cli_project) >= 2, timeout=60)
        up = time.monotonic() - killed
    print(
        f"\nSIGKILL of {victim} while it scales up: 2 replicas in rotation {up:.2f} s later; "
        f"{load.sent} requests, {load.failed} failed"
    )
    label = (
        "(m) the runtime SIGKILLed" if victim == "the runtime" else "(n) a new replica SIGKILLed"
    )
    record(f"{label} while it scales up", load.sent, load.failed,
           f"2 replicas in rotation {up:.2f} s after the kill; converged, no orphan")  # fmt: skip
    assert load.failed == 0, dict(load.results)
    if victim == "the runtime":
        assert not procs.is_running(runtime_before)
        wait_for(
            "the runtime started again by its keeper",
            lambda: procs.is_running(cli_project.runtime_pids()[0]),
            timeout=30,
        )
    else:
        assert not procs.is_running(scaling)
    wait_for("converged, no orphan", lambda: converged(cli_project), timeout=60)
    plan = cli_project.declare("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    wait_for("back to one replica", lambda: len(live(cli_project)) == 1, timeout=60)
    wait_for("converged on one replica", lambda: converged(cli_project), timeout=30)


def test_apply_killed_mid_scale_loses_nothing(cli_project: CliProject) -> None:
    """An apply that raises the range's bottom (1..3 to 2..3), SIGKILLed once it started a
    replica: the next plan reads, the next apply converges, no orphan, the runtime goes on."""
    apply(
        cli_project,
        endpoint(
            "      min_provisioned_concurrency: 4\n      max_provisioned_concurrency: 12",
            SCALING,
        ),
    )
    runtime = cli_project.runtime_pids()[0]
    cli_project.write(
        endpoint(
            "      min_provisioned_concurrency: 8\n      max_provisioned_concurrency: 12",
            SCALING,
        )
    )
    with Load(cli_project.url, threads=2, max_requests=20_000, max_seconds=120) as load:
        proc = subprocess.Popen(
            cli_project.argv("apply", "--auto-approve"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_project.env({"PYTHONUNBUFFERED": "1"}),
        )
        assert proc.stdout is not None
        seen = ""
        for line in proc.stdout:
            seen += line
            if re.search(r"replica\[\d+\]\.start: done", line):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL, f"marker never seen\n{seen}"
        plan = cli_project.declare("plan")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        apply(
            cli_project,
            endpoint(
                "      min_provisioned_concurrency: 8\n      max_provisioned_concurrency: 12",
                SCALING,
            ),
        )
    print(f"\napply SIGKILLed mid-scale, then applied: {load.sent} requests, {load.failed} failed")
    record("(o) apply SIGKILLed mid-scale (1..3 to 2..3)", load.sent, load.failed,
           "the next apply converged, no orphan; the runtime went on")  # fmt: skip
    assert load.failed == 0, dict(load.results)
    wait_for("converged, no orphan", lambda: converged(cli_project), timeout=60)
    assert len(live(cli_project)) == 2
    assert cli_project.declare("plan", "--detailed-exitcode").returncode == 0
    assert cli_project.runtime_pids()[0] == runtime  # the runtime was not disturbed
    assert entity_status(cli_project)["range"] == "2..3"
