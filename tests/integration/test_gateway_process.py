"""The gateway as a process: start, record, find, stop; its command line and its timeouts."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from declare import procs
from declare.errors import GatewayError
from declare.gateway.client import GatewayClient
from declare.gateway.echo import spawn_echo
from declare.gateway.process import (
    gateway_running,
    read_gateway_record,
    start_gateway,
    stop_gateway,
)
from declare.gateway.table import RoutingTable

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def echo() -> Iterator[str]:
    port = procs.free_port()
    proc = spawn_echo(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def one_endpoint(url: str) -> RoutingTable:
    return RoutingTable.from_json(
        {
            "version": 1,
            "endpoints": {
                "m": {
                    "routes": [{"served_entity_name": "m-1", "traffic_percentage": 100}],
                    "entities": {"m-1": {"replicas": [{"id": "r1", "url": url}]}},
                }
            },
        }
    )


def test_start_records_finds_and_stops_the_gateway(tmp_path: Path) -> None:
    port = procs.free_port()
    record = start_gateway(tmp_path, "127.0.0.1", port, auth_token="s3cret-user-token")
    try:
        assert read_gateway_record(tmp_path) == record
        assert gateway_running(record)
        assert stat.S_IMODE(record.admin_token_file.stat().st_mode) == 0o600
        assert record.log_path == tmp_path / "gateway" / "gateway.log"
        assert "listening on http://127.0.0.1" in record.log_path.read_text()
        health = record.client().health()
        assert health is not None and health["pid"] == record.process.pid
        # The end users' token reaches the process through its environment only.
        for path in (tmp_path / "gateway").iterdir():
            assert "s3cret-user-token" not in path.read_text(errors="replace")
        with pytest.raises(GatewayError, match="already runs"):
            start_gateway(tmp_path, "127.0.0.1", procs.free_port(), auth_token=None)
    finally:
        assert stop_gateway(tmp_path, grace_seconds=5) is True
    assert not gateway_running(record)
    assert not procs.is_running(record.process)
    assert read_gateway_record(tmp_path) is None
    assert stop_gateway(tmp_path) is False
    assert not procs.port_open("127.0.0.1", port)


def test_a_port_taken_by_another_program_is_reported(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(GatewayError, match=f"127.0.0.1:{port}.*taken by another program"):
            start_gateway(tmp_path, "127.0.0.1", port, auth_token=None)
    assert read_gateway_record(tmp_path) is None


def test_stopping_lets_a_request_in_flight_finish(tmp_path: Path, echo: str) -> None:
    record = start_gateway(tmp_path, "127.0.0.1", procs.free_port(), auth_token=None)
    record.client().put_table(one_endpoint(echo))
    result: dict[str, Any] = {}

    def slow() -> None:
        result["response"] = httpx.post(
            f"{record.base_url}/serving-endpoints/m/invocations",
            json={"inputs": [1], "echo_delay_seconds": 1.0},
            timeout=10,
        )

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    stop_gateway(tmp_path, grace_seconds=10)
    thread.join()
    assert result["response"].status_code == 200
    assert result["response"].json() == {"inputs": [1], "echo_delay_seconds": 1.0}


def token_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "admin-token"
    path.write_text("admin-secret")
    path.chmod(mode)
    return path


def run_cli(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "declare.gateway", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_cli_refuses_an_admin_token_file_others_can_read(tmp_path: Path) -> None:
    path = token_file(tmp_path, mode=0o644)
    done = run_cli("--port", str(procs.free_port()), "--admin-token-file", str(path))
    assert done.returncode == 2
    assert "open to other users" in done.stderr and str(path) in done.stderr


def test_cli_exits_clearly_when_it_cannot_listen(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        args = ("--port", str(port), "--admin-token-file", str(token_file(tmp_path)))
        done = run_cli(*args)
    assert done.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


@pytest.fixture
def tight_gateway(tmp_path: Path) -> Iterator[str]:
    """A gateway with one connection per replica, 0.3 s queue timeout, 1 s read timeout."""
    port = procs.free_port()
    argv = [
        sys.executable,
        "-m",
        "declare.gateway",
        "--port",
        str(port),
        "--admin-token-file",
        str(token_file(tmp_path)),
        "--pool-per-replica",
        "1",
        "--queue-timeout",
        "0.3",
        "--upstream-timeout",
        "1.0",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL)
    try:
        client = GatewayClient(f"http://127.0.0.1:{port}", "admin-secret")
        deadline = time.monotonic() + 15
        while client.health() is None:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_queue_timeout_gives_503_and_read_timeout_504(tight_gateway: str, echo: str) -> None:
    GatewayClient(tight_gateway, "admin-secret").put_table(one_endpoint(echo))
    url = f"{tight_gateway}/serving-endpoints/m/invocations"
    holder: dict[str, httpx.Response] = {}

    def hold_the_only_connection() -> None:
        holder["r"] = httpx.post(url, json={"echo_delay_seconds": 0.8}, timeout=10)

    thread = threading.Thread(target=hold_the_only_connection)
    thread.start()
    time.sleep(0.15)
    started = time.monotonic()
    queued = httpx.post(url, json={"inputs": [1]}, timeout=10)
    waited = time.monotonic() - started
    thread.join()
    assert holder["r"].status_code == 200
    assert queued.status_code == 503
    assert queued.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "retry-after" in queued.headers
    assert 0.25 < waited < 0.75

    started = time.monotonic()
    slow = httpx.post(url, json={"inputs": [1], "echo_delay_seconds": 3}, timeout=10)
    assert slow.status_code == 504
    assert slow.json()["error_code"] == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 2.5  # answered at the read timeout, not retried
    assert httpx.post(url, json={"inputs": [2]}, timeout=10).json() == {"inputs": [2]}
