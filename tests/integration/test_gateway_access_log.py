"""The gateway's access log: a real gateway process (`--access-log`, bearer auth on) in front
of a real echo upstream on 127.0.0.1; requests of several kinds, then the file read back.

Each request is one JSON line with its time, method, path, endpoint, answering entity,
status, latency and caller, and nothing of the payload, the query string or the token.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from declare import procs
from declare.gateway.client import GatewayClient
from declare.gateway.echo import spawn_echo
from declare.gateway.table import RoutingTable
from declare.ports import GatewaySettings

pytestmark = pytest.mark.integration

TOKEN = "access-log-token-" + secrets.token_hex(8)
PAYLOAD_MARK = "payload-mark-" + secrets.token_hex(4)


def test_one_json_line_per_request_without_payload_or_token(tmp_path: Path) -> None:
    admin_token = secrets.token_urlsafe(16)
    (tmp_path / "admin-token").write_text(admin_token)
    (tmp_path / "admin-token").chmod(0o600)
    access = tmp_path / "access.log"
    port, echo_port = procs.free_port(), procs.free_port()
    echo = spawn_echo(echo_port, "access")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env["DECLARE_GATEWAY_AUTH_TOKEN"] = TOKEN
    argv = [sys.executable, "-m", "declare.gateway", "--port", str(port), "--access-log"]
    argv += [str(access), "--admin-token-file", str(tmp_path / "admin-token")]
    argv += ["--log-file", str(tmp_path / "gateway.log")]
    gw = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    try:
        admin = GatewayClient(f"http://127.0.0.1:{port}", admin_token)
        deadline = time.monotonic() + 20
        while admin.health() is None:
            assert gw.poll() is None and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)
        replica = {"id": "r1", "url": f"http://127.0.0.1:{echo_port}"}
        admin.put_table(
            RoutingTable.from_json(
                {
                    "version": 1,
                    "endpoints": {
                        "iris": {
                            "routes": [{"served_entity_name": "iris-1", "traffic_percentage": 100}],
                            "entities": {"iris-1": {"replicas": [replica]}},
                        }
                    },
                }
            )
        )
        base = f"http://127.0.0.1:{port}"
        good = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as client:
            ok = client.post(
                f"/serving-endpoints/iris/invocations?secret={PAYLOAD_MARK}",
                json={"inputs": [PAYLOAD_MARK]},
                headers=good,
            )
            assert ok.status_code == 200
            bad = client.post(
                "/serving-endpoints/iris/invocations",
                json={"inputs": [1]},
                headers={"Authorization": "Bearer wrong"},
            )
            assert bad.status_code == 401
            assert client.get("/api/2.0/serving-endpoints/iris", headers=good).status_code == 200
            assert client.get("/nope", headers=good).status_code == 404
    finally:
        gw.terminate()
        gw.wait(timeout=30)
        echo.terminate()
        echo.wait(timeout=30)
    text = access.read_text()
    assert PAYLOAD_MARK not in text and TOKEN not in text and "wrong" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    public = [x for x in lines if not x["path"].startswith("/_declare/")]
    assert [(x["method"], x["path"], x["status"], x["caller"]) for x in public] == [
        ("POST", "/serving-endpoints/iris/invocations", 200, "token"),
        ("POST", "/serving-endpoints/iris/invocations", 401, "anonymous"),
        ("GET", "/api/2.0/serving-endpoints/iris", 200, "token"),
        ("GET", "/nope", 404, "token"),
    ]
    invocation = public[0]
    assert invocation["endpoint"] == "iris" and invocation["entity"] == "iris-1"
    assert invocation["latency_ms"] > 0 and invocation["time"].endswith("Z")
    assert {x["caller"] for x in lines if x["path"].startswith("/_declare/admin/")} == {"admin"}
    assert access.stat().st_mode & 0o777 == 0o600


def test_the_access_log_setting_restarts_the_gateway_only_when_on() -> None:
    base = GatewaySettings("127.0.0.1", 8787)
    assert GatewaySettings("127.0.0.1", 8787, access_log=False).hash == base.hash
    assert GatewaySettings("127.0.0.1", 8787, access_log=True).hash != base.hash
