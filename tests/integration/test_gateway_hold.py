"""What the gateway gives a runtime that heals and autoscales: held requests, demand per
served entity (with its long poll) and passive ejection, on the real gateway process.

One gateway (hold queue 3 per endpoint, ejection 1 s) and two echo upstreams on 127.0.0.1
serve the module; each test pushes its own table, with endpoint and replica names of its
own so that no test sees another's ejections or counts. Every request is bounded in time.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from declare import procs
from declare.gateway.echo import spawn_echo
from declare.gateway.process import GatewayRecord, start_gateway, stop_gateway
from declare.gateway.table import RoutingTable

pytestmark = pytest.mark.integration

HOLD_QUEUE = 3
EJECT_SECONDS = 1.0


class Env:
    def __init__(self, record: GatewayRecord, echoes: dict[str, str]) -> None:
        self.record = record
        self.url = record.base_url
        self.echoes = echoes
        self.admin = record.client()
        self.version = 0
        self.pool = ThreadPoolExecutor(max_workers=8)

    def push(self, endpoints: dict[str, Any]) -> None:
        self.version += 1
        table = {"version": self.version, "endpoints": endpoints}
        self.admin.put_table(RoutingTable.from_json(table))

    def invoke(self, endpoint: str, body: Any, timeout: float = 20.0) -> httpx.Response:
        return httpx.post(
            f"{self.url}/serving-endpoints/{endpoint}/invocations",
            json=body,
            timeout=timeout,
            trust_env=False,
        )

    def later(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self.pool.submit(fn, *args)

    def entity(self, endpoint: str, entity: str) -> dict[str, Any]:
        found: dict[str, Any] = self.admin.demand()["endpoints"][endpoint]["entities"][entity]
        return found

    def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.02)


def ep(replicas: dict[str, list[tuple[str, str]]], hold: float | None = None) -> Any:
    share = 100 // len(replicas)
    body: dict[str, Any] = {
        "routes": [{"served_entity_name": n, "traffic_percentage": share} for n in replicas],
        "entities": {
            name: {"replicas": [{"id": rid, "url": url} for rid, url in reps]}
            for name, reps in replicas.items()
        },
    }
    if hold is not None:
        body["hold_seconds"] = hold
    return body


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    state_dir: Path = tmp_path_factory.mktemp("state")
    used: set[int] = set()
    echo_procs: list[subprocess.Popen[bytes]] = []
    echoes: dict[str, str] = {}
    environment: Env | None = None
    try:
        for ident in ("e1", "e2"):
            port = procs.free_port(exclude=frozenset(used))
            used.add(port)
            echo_procs.append(spawn_echo(port, ident))
            echoes[ident] = f"http://127.0.0.1:{port}"
        port = procs.free_port(exclude=frozenset(used))
        record = start_gateway(
            state_dir,
            "127.0.0.1",
            port,
            auth_token=None,
            hold_queue=HOLD_QUEUE,
            eject_seconds=EJECT_SECONDS,
        )
        environment = Env(record, echoes)
        yield environment
        assert environment.admin.health() is not None
    finally:
        if environment is not None:
            environment.pool.shutdown(wait=True, cancel_futures=True)
        stop_gateway(state_dir, grace_seconds=5)
        for proc in echo_procs:
            proc.terminate()
            proc.wait(timeout=10)


def dead_url() -> str:
    return f"http://127.0.0.1:{procs.free_port()}"  # nothing listens there


# -- the process ---------------------------------------------------------------------------


def test_the_settings_are_recorded_and_logged(env: Env) -> None:
    assert (env.record.hold_queue, env.record.eject_seconds) == (HOLD_QUEUE, EJECT_SECONDS)
    assert GatewayRecord.from_json(env.record.to_json()) == env.record
    old = {
        k: v for k, v in env.record.to_json().items() if k not in ("hold_queue", "eject_seconds")
    }
    assert (
        GatewayRecord.from_json(old).hold_queue,
        GatewayRecord.from_json(old).eject_seconds,
    ) == (
        1000,
        2.0,
    )
    assert f"hold queue {HOLD_QUEUE} per endpoint, eject 1 s" in env.record.log_path.read_text()


@pytest.mark.parametrize("option", [("--hold-queue", "-1"), ("--eject-seconds", "-0.5")])
def test_the_command_line_refuses_negative_settings(
    tmp_path: Path, option: tuple[str, str]
) -> None:
    token = tmp_path / "admin-token"
    token.write_text("admin-secret")
    token.chmod(0o600)
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "declare.gateway",
            "--port",
            str(procs.free_port()),
            "--admin-token-file",
            str(token),
            *option,
        ],
        capture_output=True,
        text=True,
        timeout=15,
        env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert option[0] in done.stderr


# -- holding -------------------------------------------------------------------------------


def test_a_held_request_is_answered_once_a_replica_is_pushed(env: Env) -> None:
    env.push({"held": ep({"h-1": []}, hold=10)})
    env.admin.demand()  # start the peaks and the long poll's events afresh
    started = time.monotonic()
    answer = env.later(env.invoke, "held", {"inputs": [7]})
    env.until(lambda: env.entity("held", "h-1")["held"] == 1)
    time.sleep(max(0.0, 0.6 - (time.monotonic() - started)))
    pushed = time.monotonic() - started
    env.push({"held": ep({"h-1": [("h-1-e1", env.echoes["e1"])]}, hold=10)})
    response = answer.result(timeout=15)
    waited = time.monotonic() - started
    assert response.status_code == 200
    assert response.json() == {"inputs": [7]}
    assert response.headers["served-model-name"] == "h-1"
    assert pushed <= waited < pushed + 0.5, (pushed, waited)
    shown = env.entity("held", "h-1")
    assert (shown["held"], shown["inflight"], shown["peak"]) == (0, 0, 1)


def test_a_held_request_past_hold_seconds_gets_503_with_retry_after(env: Env) -> None:
    env.push({"brief": ep({"b-1": []}, hold=0.5)})
    started = time.monotonic()
    response = env.invoke("brief", {"inputs": [1]})
    waited = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert int(response.headers["retry-after"]) >= 1
    message = response.json()["message"]
    assert "'b-1' of endpoint 'brief'" in message and "waited 0.5 s" in message, message
    assert 0.5 <= waited < 1.5
    assert env.entity("brief", "b-1")["held"] == 0


def test_at_most_hold_queue_requests_are_held_per_endpoint(env: Env) -> None:
    env.push({"queue": ep({"q-1": []}, hold=10), "other": ep({"o-1": []}, hold=10)})
    held = [env.later(env.invoke, "queue", {"inputs": [i]}) for i in range(HOLD_QUEUE)]
    env.until(lambda: env.entity("queue", "q-1")["held"] == HOLD_QUEUE)
    started = time.monotonic()
    refused = env.invoke("queue", {"inputs": [99]})
    assert time.monotonic() - started < 0.5  # at once, not after hold_seconds
    assert refused.status_code == 503 and "retry-after" in refused.headers
    assert "hold queue is full" in refused.json()["message"]
    # The bound is per endpoint: another endpoint still holds.
    other = env.later(env.invoke, "other", {"inputs": [0]})
    env.until(lambda: env.entity("other", "o-1")["held"] == 1)
    env.push(
        {
            "queue": ep({"q-1": [("q-1-e1", env.echoes["e1"])]}, hold=10),
            "other": ep({"o-1": [("o-1-e2", env.echoes["e2"])]}, hold=10),
        }
    )
    assert [f.result(timeout=15).json() for f in held] == [{"inputs": [i]} for i in range(3)]
    assert other.result(timeout=15).status_code == 200


def test_without_hold_seconds_a_missing_replica_is_503_at_once(env: Env) -> None:
    env.push({"plain": ep({"p-1": []})})
    started = time.monotonic()
    response = env.invoke("plain", {"inputs": [1]})
    assert time.monotonic() - started < 0.5
    assert response.status_code == 503 and "retry-after" in response.headers
    assert "'p-1' of endpoint 'plain' has no ready replica" in response.json()["message"]
    shown = env.entity("plain", "p-1")
    assert (shown["held"], shown["peak"]) == (0, 0)
    assert shown["last_request_at"] == pytest.approx(time.time(), abs=5)


def test_an_abandoned_held_request_stops_counting(env: Env) -> None:
    env.push({"gone": ep({"g-1": []}, hold=20)})
    host, port = env.url.removeprefix("http://").split(":")
    body = b'{"inputs": [1]}'
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /serving-endpoints/gone/invocations HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        env.until(lambda: env.entity("gone", "g-1")["held"] == 1)
    env.until(lambda: env.entity("gone", "g-1")["held"] == 0, timeout=3)


# -- demand ---------------------------------------------------------------------------------


def test_demand_counts_inflight_and_peak_and_resets_the_peak_on_read(env: Env) -> None:
    busy = ep({"d-1": [("d-1-e1", env.echoes["e1"])], "d-2": []})
    busy["routes"] = [
        {"served_entity_name": "d-1", "traffic_percentage": 100},
        {"served_entity_name": "d-2", "traffic_percentage": 0},  # listed, never routed
    ]
    env.push({"busy": busy})
    env.admin.demand()
    slow = [env.later(env.invoke, "busy", {"echo_delay_seconds": 1.0}) for _ in range(3)]
    env.until(lambda: env.entity("busy", "d-1")["inflight"] == 3)
    during = env.admin.demand()["endpoints"]["busy"]["entities"]
    assert during["d-1"]["inflight"] == 3 and during["d-1"]["held"] == 0
    assert during["d-1"]["peak"] == 3
    assert during["d-1"]["last_request_at"] == pytest.approx(time.time(), abs=5)
    assert during["d-2"] == {
        "inflight": 0,
        "held": 0,
        "peak": 0,
        "last_request_at": None,
        "ejected": [],
    }
    assert [f.result(timeout=15).status_code for f in slow] == [200] * 3
    after = env.entity("busy", "d-1")
    assert after["inflight"] == 0 and after["peak"] == 3  # the peak since the last read
    assert env.entity("busy", "d-1")["peak"] == 0  # and it restarted at that read


def test_demand_of_a_new_entity_is_zeros(env: Env) -> None:
    env.push({"fresh": ep({"f-1": [("f-1-e1", env.echoes["e1"])]})})
    shown = env.admin.demand()["endpoints"]["fresh"]
    assert shown == {
        "hold_seconds": 0.0,
        "entities": {
            "f-1": {"inflight": 0, "held": 0, "peak": 0, "last_request_at": None, "ejected": []}
        },
    }


def test_demand_wait_answers_after_wait_when_nothing_happens(env: Env) -> None:
    env.admin.demand()
    started = time.monotonic()
    env.admin.demand(wait=0.5)
    assert 0.5 <= time.monotonic() - started < 1.5
    refused = httpx.get(
        f"{env.url}/_declare/admin/demand",
        params={"wait": "31"},
        headers={"X-Declare-Admin-Token": env.record.admin_token()},
    )
    assert refused.status_code == 400 and "0 to 30" in refused.json()["message"]
    assert httpx.get(f"{env.url}/_declare/admin/demand").status_code == 403


def test_demand_wait_answers_early_when_a_request_is_held(env: Env) -> None:
    env.push({"wake": ep({"w-1": []}, hold=10)})
    env.admin.demand()
    started = time.monotonic()
    poll = env.later(env.admin.demand, 10.0)
    time.sleep(0.3)
    answer = env.later(env.invoke, "wake", {"inputs": [1]})
    demand = poll.result(timeout=15)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert demand["endpoints"]["wake"]["entities"]["w-1"]["held"] == 1
    env.push({"wake": ep({"w-1": [("w-1-e2", env.echoes["e2"])]}, hold=10)})
    assert answer.result(timeout=15).status_code == 200


def test_demand_wait_answers_early_when_a_replica_cannot_be_reached(env: Env) -> None:
    env.push({"fail": ep({"x-1": [("x-1-dead", dead_url()), ("x-1-e1", env.echoes["e1"])]})})
    env.admin.demand()
    started = time.monotonic()
    poll = env.later(env.admin.demand, 10.0)
    time.sleep(0.3)
    responses = [env.invoke("fail", {"inputs": [i]}) for i in range(2)]  # one meets the dead
    demand = poll.result(timeout=15)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert [r.status_code for r in responses] == [200, 200]
    assert demand["endpoints"]["fail"]["entities"]["x-1"]["ejected"] == ["x-1-dead"]


# -- ejection -------------------------------------------------------------------------------


def test_an_unreachable_replica_is_skipped_for_eject_seconds_then_tried_again(env: Env) -> None:
    table = {"eject": ep({"j-1": [("j-1-dead", dead_url()), ("j-1-e2", env.echoes["e2"])]})}
    env.push(table)

    def failures() -> int:
        entity = env.admin.metrics()["endpoints"].get("eject", {}).get("entities", {})
        return int(entity.get("j-1", {}).get("total_connection_failures", 0))

    started = time.monotonic()
    for i in range(10):
        assert env.invoke("eject", {"inputs": [i]}).status_code == 200
    assert failures() == 1  # only the first pick of the dead replica; then it is skipped
    env.push(table)  # a push that still lists it does not bring it back early
    for i in range(10):
        assert env.invoke("eject", {"inputs": [i]}).status_code == 200
    assert failures() == 1
    assert env.entity("eject", "j-1")["ejected"] == ["j-1-dead"]
    assert time.monotonic() - started < EJECT_SECONDS, "too slow to see the ejection"
    time.sleep(EJECT_SECONDS + 0.1)
    assert env.entity("eject", "j-1")["ejected"] == []
    for i in range(4):  # round-robin reaches the dead replica again within two picks
        assert env.invoke("eject", {"inputs": [i]}).status_code == 200
    assert failures() == 2
    assert env.entity("eject", "j-1")["ejected"] == ["j-1-dead"]


def test_a_held_request_survives_its_replica_dying(env: Env) -> None:
    """The only replica is dead: the request is held, not failed, until a live one comes."""
    env.push({"heal": ep({"k-1": [("k-1-dead", dead_url())]}, hold=10)})
    env.admin.demand()
    answer = env.later(env.invoke, "heal", {"inputs": [5]})
    demand = env.admin.demand(wait=5.0)
    assert demand["endpoints"]["heal"]["entities"]["k-1"]["ejected"] == ["k-1-dead"]
    env.until(lambda: env.entity("heal", "k-1")["held"] == 1)
    env.push({"heal": ep({"k-1": [("k-1-e1", env.echoes["e1"])]}, hold=10)})
    response = answer.result(timeout=15)
    assert response.status_code == 200 and response.json() == {"inputs": [5]}
