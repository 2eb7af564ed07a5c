"""A shadow step's gateway side: a real gateway process, real model stand-ins on loopback.

Each test starts its own gateway (`python -m declare.gateway`, end-user auth on, capture on
below a temporary folder) and two or three tiny model servers in threads of the test
process (`Model`: http.server on 127.0.0.1 answering {"predictions": [...]} computed from
the request's `inputs`, counting its requests). The table it pushes routes every request to
the serving model and names a candidate as the endpoint's `shadow`; what users get, what
the candidate got, the admin metrics and the inference table are then checked. Every
request goes to 127.0.0.1; the number of requests and every wait are bounded; the gateway
is stopped by its own Popen and the model servers by their own `shutdown`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from deltalake import DeltaTable

from declare import procs
from declare.gateway import AUTH_ENV
from declare.gateway.client import GatewayClient
from declare.gateway.table import RoutingTable

pytestmark = pytest.mark.integration

ROOT = str(Path(__file__).resolve().parents[2])
ADMIN = "admin-secret-for-shadow-tests"
TOKEN = "user-token-for-shadow-tests"
CAPTURE = {"catalog_name": "ml", "schema_name": "serving", "table_name_prefix": "iris"}
KEY = "iris-2@ab12cd34"


class Model:
    """A model server stand-in: each input row [x, ...] is answered `scale * x`, with
    `status`; it counts its requests and those that came with an Authorization header."""

    def __init__(self, scale: float, status: int = 200, slow: bool = False) -> None:
        self.scale = scale
        self.status = status
        self.slow = slow  # answer only once `release` is set (by `stop` at the latest)
        self.release = threading.Event()
        self.requests = 0
        self.authorized = 0  # requests that came with an Authorization header
        self.lock = threading.Lock()
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # head and body are two writes

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with model.lock:
                    model.requests += 1
                    model.authorized += "Authorization" in self.headers
                if model.slow:
                    model.release.wait(30)
                rows = json.loads(body)["inputs"]
                answer = json.dumps({"predictions": [model.scale * r[0] for r in rows]})
                if model.status >= 400:
                    answer = json.dumps({"error_code": "INTERNAL_ERROR", "message": "broken"})
                data = answer.encode()
                self.send_response(model.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class Gateway:
    """One gateway process (auth on, capture on) and the way to talk to it."""

    def __init__(self, tmp: Path) -> None:
        token = tmp / "admin-token"
        token.write_text(ADMIN)
        token.chmod(0o600)
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.capture_root = tmp / "capture"
        self.log_path = tmp / f"gateway-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
        env[AUTH_ENV] = TOKEN
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "declare.gateway", "--port", str(self.port),
                "--admin-token-file", str(token), "--capture-root", str(self.capture_root),
                "--capture-flush-seconds", "0.2",
            ],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.admin = GatewayClient(self.url, ADMIN)
        until(lambda: self.proc.poll() is not None or self.admin.health() is not None)
        assert self.proc.poll() is None, self.log_path.read_text()
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30.0,
            trust_env=False,
        )

    def push(self, version: int, serving: Model, candidate: Model | None, **extra: Any) -> None:
        """Route to `serving`; `candidate` as the shadow (`shadow_extra`: its fields)."""
        shadow_extra = extra.pop("shadow_extra", {})
        endpoint: dict[str, Any] = {
            "routes": [{"served_entity_name": "iris-1", "traffic_percentage": 100}],
            "entities": {
                "iris-1": {
                    "replicas": [{"id": "iris-1-a", "url": serving.url}],
                    "model": {"name": "iris", "version": "1"},
                }
            },
            **extra,
        }
        if candidate is not None:
            endpoint["shadow"] = shadow(candidate, **shadow_extra)
        table = {"version": version, "endpoints": {"iris": endpoint}}
        self.admin.put_table(RoutingTable.from_json(table))

    def invoke(self, inputs: list[list[float]], request_id: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"inputs": inputs}
        if request_id is not None:
            body["client_request_id"] = request_id
        return self.http.post("/serving-endpoints/iris/invocations", json=body)

    def figures(self, since: float | None = None) -> dict[str, Any]:
        endpoint = self.admin.metrics(since)["endpoints"].get("iris", {})
        found: dict[str, Any] = endpoint.get("shadow", {}).get(KEY, {})
        return found

    def stop(self) -> int:
        """Close the clients' connections, SIGTERM this process, wait; its exit code."""
        self.http.close()
        self.admin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code


def shadow(candidate: Model, percent: int = 50, **extra: Any) -> dict[str, Any]:
    return {
        "key": KEY,
        "served_name": "iris-2",
        "percent": percent,
        "tolerance": 1e-9,
        "replicas": [{"id": "iris-2-a", "url": candidate.url}],
        "model": {"name": "iris", "version": "2"},
        **extra,
    }


def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `condition` until true; fail after `timeout` s (a bound, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Gateway, Callable[..., Model]]]:
    """A gateway, and a maker of model servers; all of them stopped at the end."""
    models: list[Model] = []

    def model(scale: float, status: int = 200, slow: bool = False) -> Model:
        models.append(Model(scale, status, slow))
        return models[-1]

    gateway = Gateway(tmp_path)
    try:
        yield gateway, model
    finally:
        code = gateway.stop()
        for m in models:
            m.stop()
        log = gateway.log_path.read_text()
        assert code == 0, log
        assert "Task was destroyed" not in log and "Traceback" not in log, log


def test_users_get_the_serving_answers_and_the_candidate_exactly_its_share(
    world: tuple[Gateway, Callable[..., Model]],
) -> None:
    gw, model = world
    serving, agreeing, disagreeing = model(2.0), model(2.0), model(3.0)
    n = 20
    gw.push(1, serving, agreeing)  # 50 %: every 2nd request
    for i in range(n):
        response = gw.invoke([[float(i)], [i + 0.5]])
        assert response.status_code == 200
        assert response.json() == {"predictions": [2.0 * i, 2.0 * (i + 0.5)]}
        assert response.headers["served-model-name"] == "iris-1"
    until(lambda: gw.figures().get("requests") == n // 2)
    got = gw.figures()
    assert agreeing.requests == n // 2 and serving.requests == n
    assert agreeing.authorized == 0  # the user's token is not passed on
    assert {k: got[k] for k in ("requests", "errors", "rows", "differing", "dropped")} == {
        "requests": n // 2,
        "errors": 0,
        "rows": n,  # two rows per request
        "differing": 0,
        "dropped": 0,
    }
    assert got["disagreement_rate"] == 0.0 and got["served_name"] == "iris-2"
    assert got["p99_ms"] > 0 and got["primary_p99_ms"] > 0

    gw.push(2, serving, disagreeing, shadow_extra={"percent": 100})
    since = time.time()
    for i in range(1, n + 1):  # no 0: 3 * 0 would agree
        response = gw.invoke([[float(i)]])
        assert response.json() == {"predictions": [2.0 * i]}  # never the candidate's 3x
    until(lambda: gw.figures(since).get("requests") == n)
    window = gw.figures(since)
    assert disagreeing.requests == n
    assert (window["rows"], window["differing"], window["disagreement_rate"]) == (n, n, 1.0)
    assert (gw.figures()["total_requests"], gw.figures()["total_differing"]) == (n + n // 2, n)

    metrics = httpx.get(
        f"{gw.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
    ).text
    labels = f'endpoint_name="iris",served_entity_name="iris-2",shadow_key="{KEY}"'
    assert f"declare_shadow_requests_total{{{labels}}} {float(n + n // 2)}" in metrics
    assert f"declare_shadow_differing_rows_total{{{labels}}} {float(n)}" in metrics


def test_a_failing_candidate_counts_errors_and_users_still_get_200(
    world: tuple[Gateway, Callable[..., Model]],
) -> None:
    gw, model = world
    serving, broken = model(2.0), model(2.0, status=500)
    n = 10
    gw.push(1, serving, broken, shadow_extra={"percent": 100})
    for i in range(n):
        response = gw.invoke([[float(i)]])
        assert (response.status_code, response.json()) == (200, {"predictions": [2.0 * i]})
    until(lambda: gw.figures().get("requests") == n)
    got = gw.figures()
    assert (got["errors"], got["error_rate"], got["rows"]) == (n, 1.0, 0)
    served = gw.admin.metrics()["endpoints"]["iris"]
    assert (served["requests"], served["errors"]) == (n, 0)  # the endpoint's own figures

    # A push without the shadow: no more mirrors.
    gw.push(2, serving, None)
    assert "shadow" not in gw.admin.get_table().to_json()["endpoints"]["iris"]
    for i in range(n):
        assert gw.invoke([[float(i)]]).status_code == 200
    time.sleep(0.3)  # what a mirror would need to arrive (a bound on the wait, no timing)
    assert broken.requests == n and gw.figures()["total_requests"] == n
    assert serving.requests == 2 * n


def test_captured_shadow_answers_are_rows_of_their_own_flagged_shadow(
    world: tuple[Gateway, Callable[..., Model]],
) -> None:
    gw, model = world
    serving, candidate = model(2.0), model(3.0)
    n = 10
    gw.push(1, serving, candidate, capture=CAPTURE)
    for i in range(n):
        assert gw.invoke([[float(i)]], request_id=f"req-{i}").status_code == 200
    until(lambda: gw.admin.metrics()["capture"]["written"] == n + n // 2)
    table = DeltaTable(str(gw.capture_root / "ml" / "serving" / "iris_payload"))
    rows = table.to_pyarrow_table().to_pylist()
    users = [r for r in rows if "shadow" not in dict(r["request_metadata"])]
    mirrors = [r for r in rows if dict(r["request_metadata"]).get("shadow") == "true"]
    assert len(users) == n and len(mirrors) == n // 2 and len(rows) == n + n // 2
    assert sorted(r["client_request_id"] for r in users) == sorted(f"req-{i}" for i in range(n))
    # 50 %: the 2nd, 4th, ... request was mirrored
    assert sorted(r["client_request_id"] for r in mirrors) == sorted(
        f"req-{i}" for i in range(1, n, 2)
    )
    by_id = {r["client_request_id"]: r for r in users}
    for row in mirrors:
        meta = dict(row["request_metadata"])
        assert (meta["served_entity_name"], meta["model_name"], meta["model_version"]) == (
            "iris-2",
            "iris",
            "2",
        )
        user = by_id[row["client_request_id"]]
        assert row["request"] == user["request"]
        assert row["status_code"] == 200 and row["execution_time_ms"] >= 0
        i = int(row["client_request_id"].removeprefix("req-"))
        assert json.loads(row["response"]) == {"predictions": [3.0 * i]}
        assert json.loads(user["response"]) == {"predictions": [2.0 * i]}
        assert dict(user["request_metadata"])["served_entity_name"] == "iris-1"
    assert gw.figures()["differing"] == n // 2


def test_mirrors_in_flight_neither_delay_users_nor_hold_up_a_push_or_the_shutdown(
    world: tuple[Gateway, Callable[..., Model]],
) -> None:
    gw, model = world
    serving, stuck = model(2.0), model(2.0, slow=True)
    n = 3
    gw.push(1, serving, stuck, shadow_extra={"percent": 100})
    for i in range(n):  # answered while every mirror is still waiting for the candidate
        response = gw.invoke([[float(i)]])
        assert (response.status_code, response.json()) == (200, {"predictions": [2.0 * i]})
    until(lambda: stuck.requests == n)
    assert gw.figures() == {}  # no mirror has finished
    gw.push(2, serving, None)  # cancels them
    assert gw.invoke([[1.0]]).status_code == 200
    assert gw.figures() == {} and stuck.requests == n  # cancelled: not counted, no new one
    gw.push(3, serving, stuck, shadow_extra={"percent": 100})
    assert gw.invoke([[1.0]]).status_code == 200
    until(lambda: stuck.requests == n + 1)
    started = time.monotonic()
    assert gw.stop() == 0  # the mirror in flight is cancelled (the log is checked at the end)
    assert time.monotonic() - started < 25  # it did not wait for the candidate's 30 s
