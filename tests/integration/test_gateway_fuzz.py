"""A fuzz test of the gateway's HTTP surface: generated requests over raw sockets on 127.0.0.1.

A real gateway (`python -m declare.gateway`, bearer auth on) routes endpoint `iris` to a real
echo upstream (`declare.gateway.echo`). Hypothesis generates requests: known and random
methods and paths (percent-encoding, dots, trailing slashes, query strings), with and
without the token, content types and encodings that do and do not match their bodies
(random bytes, invalid UTF-8, JSON deeply nested or with huge numbers, truncated gzip), and
Content-Length that over- or under-states the body (a body short of its length is timed
out after 0.5 s here: 408). Every answer must be a 2xx, or a 4xx in
the JSON error shape (`error_code`, `message`), never a 5xx; after all of them the gateway
still answers a real prediction and its log holds no traceback.

Bounded: a fixed number of examples, each with a 10 s socket timeout.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from declare import procs
from declare.gateway.client import GatewayClient
from declare.gateway.echo import spawn_echo
from declare.gateway.table import RoutingTable

pytestmark = pytest.mark.integration

TOKEN = "fuzz-token-" + "x" * 16
EXAMPLES = 300


@dataclass(frozen=True)
class Gateway:
    port: int
    log: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    admin_token = secrets.token_urlsafe(16)
    (folder / "admin-token").write_text(admin_token)
    (folder / "admin-token").chmod(0o600)
    log = folder / "gateway.log"
    port, echo_port = procs.free_port(), procs.free_port()
    echo = spawn_echo(echo_port, "fuzz")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env["DECLARE_GATEWAY_AUTH_TOKEN"] = TOKEN
    argv = [sys.executable, "-m", "declare.gateway", "--port", str(port)]
    argv += ["--admin-token-file", str(folder / "admin-token"), "--log-file", str(log)]
    argv += ["--max-body-bytes", "65536", "--body-timeout", "0.5"]
    gw = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    try:
        admin = GatewayClient(f"http://127.0.0.1:{port}", admin_token)
        deadline = time.monotonic() + 20
        while admin.health() is None:
            assert gw.poll() is None and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)
        table = {
            "version": 1,
            "endpoints": {
                "iris": {
                    "routes": [{"served_entity_name": "iris-1", "traffic_percentage": 100}],
                    "entities": {
                        "iris-1": {
                            "replicas": [{"id": "r1", "url": f"http://127.0.0.1:{echo_port}"}]
                        }
                    },
                }
            },
        }
        admin.put_table(RoutingTable.from_json(table))
        yield Gateway(port, log)
        assert gw.poll() is None, "the gateway died"
    finally:
        gw.terminate()
        gw.wait(timeout=30)
        echo.terminate()
        echo.wait(timeout=30)


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


BODIES = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=512).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.just(b"\xff\xfe\xfa invalid utf-8 \xc3("),
    st.integers(min_value=1, max_value=5000).map(_deep),
    st.just(b'{"dataframe_split": {"columns": ["a"], "data": [[1e999999]]}}'),
    st.just(b'{"inputs": ' + b"9" * 5000 + b"}"),
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=30,
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=512).map(lambda b: gzip.compress(b)[: max(1, len(b) // 2)]),
).filter(lambda b: b"echo_" not in b)

PATHS = st.one_of(
    st.sampled_from(
        [
            "/serving-endpoints/iris/invocations",
            "/serving-endpoints/iris/invocations/",
            "/serving-endpoints/nope/invocations",
            "/serving-endpoints/%69ris/invocations",
            "/serving-endpoints/../iris/invocations",
            "/serving-endpoints//invocations",
            "/api/2.0/serving-endpoints",
            "/api/2.0/serving-endpoints/",
            "/api/2.0/serving-endpoints/iris",
            "/api/2.0/serving-endpoints/iris/metrics",
            "/api/2.0/serving-endpoints/iris/served-models/iris-1/logs",
            "/api/2.0/serving-endpoints/iris/served-models/%00/build-logs",
            "/_declare/health",
            "/_declare/admin/table",
            "/metrics",
            "/",
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"),
        max_size=80,
    ).map(lambda s: "/" + s),
).flatmap(lambda p: st.sampled_from([p, p + "?x=1", p + "?%zz=%"]))

HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(
            ["application/json", "text/csv", "application/octet-stream", "json", "", "a/b; x"]
        ),
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity", "bogus"]),
        "Authorization": st.sampled_from([f"Bearer {TOKEN}", "Bearer wrong", "Basic xx", ""]),
        "Accept-Encoding": st.sampled_from(["gzip", "*", "bogus;q=2"]),
    },
)


def _complete(data: bytes) -> bool:
    """A whole answer: its head and as many body bytes as its Content-Length says."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _send(port: int, raw: bytes) -> bytes:
    """The answer to `raw`, read until it is whole or the gateway closes (an answer to a
    body short of its length may come while aiohttp still lingers for the rest)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while not _complete(data):
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    return data


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "FOO"]),
    path=PATHS,
    headers=HEADERS,
    body=BODIES,
    length_delta=st.sampled_from([0, 0, 0, 0, 0, -1, 1, 10]),
)
def test_every_generated_request_gets_2xx_or_a_json_4xx(
    gateway: Gateway,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    length_delta: int,
) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {max(0, len(body) + length_delta)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    answer = _send(gateway.port, raw)
    assert answer, f"no answer to {raw[:300]!r}"
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    status = int(status_line.split()[1])
    assert status < 500, f"{status_line} for {raw[:300]!r}: {content[:300]!r}"
    if 400 <= status < 500 and method != "HEAD":
        error = json.loads(content)
        assert {"error_code", "message"} <= set(error), content[:300]


def test_the_gateway_still_serves_and_logged_no_traceback(gateway: Gateway) -> None:
    r = httpx.post(
        f"http://127.0.0.1:{gateway.port}/serving-endpoints/iris/invocations",
        json={"inputs": [1, 2]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json() == {"inputs": [1, 2]}
    text = gateway.log.read_text()
    assert "Traceback" not in text, text[-4000:]
