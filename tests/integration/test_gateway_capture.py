"""Inference tables: a real gateway process, a real echo upstream, a real Delta table.

Each test starts its own gateway (`python -m declare.gateway` with `--capture-root` in a
temporary folder and the capture settings the test needs), pushes a routing table whose
endpoints capture, sends requests over HTTP on 127.0.0.1, and reads the table back with
`deltalake` and DuckDB, as a user of the table would. Processes are stopped by their own
Popen (SIGTERM for a clean stop, SIGKILL for the crash test), never by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families

from declare import procs
from declare.gateway.client import GatewayClient
from declare.gateway.echo import spawn_echo
from declare.gateway.table import RoutingTable

pytestmark = pytest.mark.integration

ROOT = str(Path(__file__).resolve().parents[2])
ADMIN = "admin-secret-for-capture-tests"
CAPTURE = {"catalog_name": "ml", "schema_name": "serving", "table_name_prefix": "iris"}


class Gateway:
    """One gateway process with capture on, and the way to talk to it."""

    def __init__(self, tmp: Path, capture_root: Path, echo_url: str, *options: str) -> None:
        token = tmp / "admin-token"
        token.write_text(ADMIN)
        token.chmod(0o600)
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.echo_url = echo_url
        self.log = open(tmp / f"gateway-{self.port}.log", "wb")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "declare.gateway",
                "--port",
                str(self.port),
                "--admin-token-file",
                str(token),
                "--capture-root",
                str(capture_root),
                *options,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.admin = GatewayClient(self.url, ADMIN)
        until(lambda: self.proc.poll() is not None or self.admin.health() is not None)
        assert self.proc.poll() is None, (tmp / f"gateway-{self.port}.log").read_text()
        self.http = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)

    def push(self, endpoints: dict[str, Any]) -> None:
        self.admin.put_table(RoutingTable.from_json({"version": 1, "endpoints": endpoints}))

    def endpoint(self, **extra: Any) -> dict[str, Any]:
        return {
            "routes": [{"served_entity_name": "iris-3", "traffic_percentage": 100}],
            "entities": {
                "iris-3": {
                    "replicas": [{"id": "iris-3-a", "url": self.echo_url}],
                    "model": {"name": "iris", "version": "3"},
                }
            },
            "capture": CAPTURE,
            **extra,
        }

    def invoke(self, endpoint: str, body: Any, **kw: Any) -> httpx.Response:
        path = f"/serving-endpoints/{endpoint}/invocations"
        if isinstance(body, bytes):
            return self.http.post(path, content=body, **kw)
        return self.http.post(path, json=body, **kw)

    def capture_stats(self) -> dict[str, int]:
        stats: dict[str, int] = self.admin.metrics()["capture"]
        return stats

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process (only this one) and wait for it to exit; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.http.close()
        self.log.close()
        return code


def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `condition` until true; fail after `timeout` s (a bound, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.05)


def table_path(root: Path, prefix: str = "iris") -> Path:
    return root / "ml" / "serving" / f"{prefix}_payload"


def rows(path: Path) -> list[dict[str, Any]]:
    """The table's rows read with deltalake, by arrival (to the millisecond)."""
    found: list[dict[str, Any]] = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    return sorted(found, key=lambda r: r["timestamp_ms"])


def duckdb_count(path: Path, where: str = "true") -> int:
    """Rows counted by DuckDB over the table's current version (its Arrow dataset)."""
    dataset = DeltaTable(str(path)).to_pyarrow_dataset()  # noqa: F841  (DuckDB reads it by name)
    ((count,),) = duckdb.sql(f"select count(*) from dataset where {where}").fetchall()
    return int(count)


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    port = procs.free_port()
    proc = spawn_echo(port, "capture-echo")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def start(tmp_path: Path, echo_url: str) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def starter(*options: str) -> Gateway:
        gateway = Gateway(tmp_path, tmp_path / "capture", echo_url, *options)
        started.append(gateway)
        return gateway

    yield starter
    for gateway in started:
        if gateway.proc.poll() is None:
            gateway.stop()


def test_every_request_and_its_answer_land_in_the_table(
    start: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = start("--capture-flush-seconds", "0.2")
    limited = gw.endpoint(
        capture={**CAPTURE, "table_name_prefix": "limited"},
        rate_limits=[{"calls": 1, "key": "endpoint", "renewal_period": "minute"}],
    )
    gw.push({"iris": gw.endpoint(), "limited": limited, "quiet": gw.endpoint(capture=None)})
    n = 20
    for i in range(n):
        body = {"client_request_id": f"req-{i}", "inputs": [[i, 0.5]]}
        assert gw.invoke("iris", body).status_code == 200
    assert gw.invoke("iris", {"inputs": [[1]], "echo_status": 422}).status_code == 422
    assert (
        gw.invoke("iris", b"[1, 2]", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert gw.invoke("limited", {"inputs": [[1]]}).status_code == 200
    assert gw.invoke("limited", {"inputs": [[2]]}).status_code == 429
    assert gw.invoke("quiet", {"inputs": [[1]]}).status_code == 200
    until(lambda: gw.capture_stats()["written"] == n + 4)

    captured = rows(table_path(tmp_path / "capture"))
    assert len(captured) == n + 2
    assert duckdb_count(table_path(tmp_path / "capture")) == n + 2
    ok = sorted(
        (r for r in captured if r["status_code"] == 200),
        key=lambda r: int(r["client_request_id"].removeprefix("req-")),
    )
    assert [r["client_request_id"] for r in ok] == [f"req-{i}" for i in range(n)]
    assert [json.loads(r["request"])["inputs"] for r in ok] == [[[i, 0.5]] for i in range(n)]
    assert all(json.loads(r["response"]) == json.loads(r["request"]) for r in ok)  # echoed
    assert len({r["databricks_request_id"] for r in captured}) == n + 2
    first = ok[0]
    assert dict(first["request_metadata"]) == {
        "endpoint_name": "iris",
        "served_entity_name": "iris-3",
        "model_name": "iris",
        "model_version": "3",
        "requester": "anonymous",
    }
    assert first["sampling_fraction"] == 1.0
    assert first["execution_time_ms"] >= 0
    assert first["logging_error_codes"] == []
    assert str(first["date"]) == time.strftime(
        "%Y-%m-%d", time.gmtime(first["timestamp_ms"] / 1000)
    )
    by_status = {r["status_code"]: r for r in captured}
    assert json.loads(by_status[422]["response"])["echo_status"] == 422  # the replica's 4xx
    refused = by_status[400]  # refused by the gateway before any entity was chosen
    assert refused["request"] == "[1, 2]"
    assert json.loads(refused["response"])["error_code"] == "BAD_REQUEST"
    assert "served_entity_name" not in dict(refused["request_metadata"])
    # The table is partitioned by date, as Databricks' is.
    assert DeltaTable(str(table_path(tmp_path / "capture"))).metadata().partition_columns == [
        "date"
    ]

    limited_rows = rows(table_path(tmp_path / "capture", "limited"))
    assert [r["status_code"] for r in limited_rows] == [200, 429]
    assert json.loads(limited_rows[1]["response"])["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert json.loads(limited_rows[1]["request"]) == {"inputs": [[2]]}
    # The endpoint without capture wrote nothing.
    assert not (tmp_path / "capture" / "main").exists()
    assert sorted(p.name for p in (tmp_path / "capture" / "ml" / "serving").iterdir()) == [
        "iris_payload",
        "limited_payload",
    ]
    assert gw.stop() == 0


def test_a_payload_over_the_limit_is_stored_truncated_and_flagged(
    start: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = start("--capture-max-payload-bytes", "100", "--capture-flush-seconds", "0.2")
    gw.push({"iris": gw.endpoint()})
    big = json.dumps({"inputs": [[float(i) for i in range(200)]]}).encode()
    response = gw.invoke("iris", big, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.content == big  # the caller gets everything: only the table truncates
    assert gw.invoke("iris", {"inputs": [[1]]}).status_code == 200
    until(lambda: gw.capture_stats()["written"] == 2)
    cut, whole = sorted(rows(table_path(tmp_path / "capture")), key=lambda r: -len(r["request"]))
    assert len(cut["request"]) == 100 and big.decode().startswith(cut["request"])
    assert cut["logging_error_codes"] == ["MAX_REQUEST_SIZE_EXCEEDED", "MAX_RESPONSE_SIZE_EXCEEDED"]
    assert whole["logging_error_codes"] == []
    assert json.loads(whole["request"]) == {"inputs": [[1]]}
    assert duckdb_count(table_path(tmp_path / "capture"), "len(logging_error_codes) > 0") == 1


def test_a_body_that_does_not_decode_is_refused_and_captured_empty(
    start: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = start("--capture-flush-seconds", "0.2")
    gw.push({"iris": gw.endpoint()})
    bad = gw.invoke(
        "iris",
        b"not gzip at all",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert bad.status_code == 400, bad.text  # not a 500 from reading it again to capture it
    assert "content-encoding" in bad.json()["message"]
    until(lambda: gw.capture_stats()["written"] == 1)
    (row,) = rows(table_path(tmp_path / "capture"))
    assert (row["status_code"], row["request"]) == (400, "")


def test_a_full_buffer_drops_and_counts_and_requests_never_wait(
    start: Callable[..., Gateway], tmp_path: Path
) -> None:
    # A buffer of 5 that is written only at shutdown: the 6th request on is dropped.
    gw = start(
        "--capture-buffer",
        "5",
        "--capture-flush-records",
        "1000",
        "--capture-flush-seconds",
        "600",
    )
    gw.push({"iris": gw.endpoint()})
    answers = [gw.invoke("iris", {"inputs": [[i]]}).status_code for i in range(12)]
    assert answers == [200] * 12
    stats = gw.capture_stats()
    assert (stats["captured"], stats["dropped"], stats["buffered"]) == (5, 7, 5)
    scraped = {
        s.name: s.value
        for family in text_string_to_metric_families(gw.http.get("/metrics").text)
        for s in family.samples
    }  # and Prometheus sees the same
    assert (scraped["declare_capture_dropped_total"], scraped["declare_capture_buffered"]) == (7, 5)
    # A clean stop writes what the buffer holds.
    assert gw.stop() == 0
    kept = rows(table_path(tmp_path / "capture"))
    assert [json.loads(r["request"])["inputs"] for r in kept] == [[[i]] for i in range(5)]


def test_a_gateway_killed_while_writing_leaves_a_readable_table(
    start: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = start("--capture-flush-records", "10", "--capture-flush-seconds", "0.01")
    gw.push({"iris": gw.endpoint()})
    path = table_path(tmp_path / "capture")
    answered = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def send(worker: int) -> None:
        with httpx.Client(base_url=gw.url, timeout=5.0, trust_env=False) as client:
            i = 0
            while not stop.is_set():
                try:
                    response = client.post(
                        "/serving-endpoints/iris/invocations",
                        json={"inputs": [[worker, i]], "pad": "x" * 2000},
                    )
                except httpx.HTTPError:
                    return  # the gateway is gone
                if response.status_code == 200:
                    with lock:
                        answered[0] += 1
                i += 1

    senders = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for thread in senders:
        thread.start()
    try:
        # Kill it while it writes: after a few commits, with requests still arriving.
        until(lambda: (path / "_delta_log").is_dir() and len(os.listdir(path / "_delta_log")) >= 5)
        assert gw.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        stop.set()
        for thread in senders:
            thread.join(timeout=30)

    kept = rows(path)  # deltalake reads the last commit; a half-written file is not in it
    # At most the answered requests, and those whose answer the kill cut off on the way.
    assert 0 < len(kept) <= answered[0] + len(senders)
    assert duckdb_count(path) == len(kept)
    assert all(r["status_code"] == 200 and json.loads(r["request"])["pad"] for r in kept)
    assert len({r["databricks_request_id"] for r in kept}) == len(kept)

    # A gateway started again appends to the same table.
    again = start("--capture-flush-seconds", "0.2")
    again.push({"iris": again.endpoint()})
    for i in range(3):
        assert again.invoke("iris", {"inputs": [["after", i]]}).status_code == 200
    assert again.stop() == 0
    after = [json.loads(r["request"])["inputs"] for r in rows(path)]
    assert len(after) == len(kept) + 3
    assert [x for x in after if x[0][0] == "after"] == [[["after", i]] for i in range(3)]


def test_the_projects_gateway_captures_what_the_recorded_state_enables(
    tmp_path: Path, echo_url: str
) -> None:
    """The whole way without MLflow: a recorded endpoint whose manifest enabled capture ->
    the routing table declare pushes -> the project's gateway (started as apply starts it,
    with the default capture root) -> state/capture/main/default/<endpoint>_payload."""
    from dataclasses import replace

    from declare.gateway_control import ProcessGateway
    from declare.ports import GatewaySettings
    from declare.routing import routing_table
    from declare.state.document import State
    from tests.unit.planning_fixtures import applied, desired

    d = desired(("1", 100))
    d = replace(d, spec=replace(d.spec, extra={"auto_capture_config": {"enabled": True}}))
    state, _ = applied(d)
    record = state.endpoints["iris"]
    replicas = tuple(replace(r, handle=replace(r.handle, url=echo_url)) for r in record.replicas)
    state = State(serial=3, lineage="l", endpoints={"iris": replace(record, replicas=replicas)})
    state_dir = tmp_path / "state"
    gateway = ProcessGateway(state_dir)
    gateway.start(GatewaySettings("127.0.0.1", procs.free_port()))
    try:
        admin = gateway.admin()
        assert admin is not None
        admin.put_table(routing_table(state, 1))
        url = f"{gateway.record().base_url}/serving-endpoints/iris/invocations"  # type: ignore[union-attr]
        assert httpx.post(url, json={"inputs": [[5.1, 3.5]]}, trust_env=False).status_code == 200
    finally:
        gateway.stop()
    (row,) = rows(state_dir / "capture" / "main" / "default" / "iris_payload")
    assert json.loads(row["request"]) == {"inputs": [[5.1, 3.5]]}
    assert dict(row["request_metadata"])["model_version"] == "1"
    assert dict(row["request_metadata"])["served_entity_name"] == "iris-1"
