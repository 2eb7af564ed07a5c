"""The gateway facing hostile clients at the HTTP level, over raw sockets on 127.0.0.1.

Requests aiohttp's parser refuses (a garbage request line, a 100 KB header, bad chunked
encoding, an invalid Content-Length) get the gateway's JSON error shape, a 4xx and a closed
connection; sockets that trickle half a request head are closed after the head timeout, idle
kept-alive ones after the idle timeout, and a client within the timeouts keeps its connection.
The gateway's log never shows a traceback. The gateway runs as `python -m declare.gateway`
with a 1 s head timeout, a 4 s idle timeout (so that each is seen apart from the other) and
no routing table (no upstream is needed).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from declare import procs
from declare.gateway.client import GatewayClient

pytestmark = pytest.mark.integration

HEADER = 1.0  # the gateway's --header-timeout here
IDLE = 4.0  # and its --idle-timeout


@dataclass(frozen=True)
class Gateway:
    port: int
    log: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder: Path = tmp_path_factory.mktemp("gw")
    token_file = folder / "admin-token"
    token = secrets.token_urlsafe(16)
    token_file.write_text(token)
    token_file.chmod(0o600)
    log = folder / "gateway.log"
    port = procs.free_port()
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root)
    env.pop("DECLARE_GATEWAY_AUTH_TOKEN", None)
    argv = [sys.executable, "-m", "declare.gateway", "--port", str(port)]
    argv += ["--admin-token-file", str(token_file), "--log-file", str(log)]
    argv += ["--header-timeout", str(HEADER), "--idle-timeout", str(IDLE)]
    gw = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    try:
        admin = GatewayClient(f"http://127.0.0.1:{port}", token)
        deadline = time.monotonic() + 20
        while admin.health() is None:
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)
        yield Gateway(port, log)
        assert gw.poll() is None, "the gateway died"
        text = log.read_text()
        assert "Traceback" not in text, text
        assert " ERROR " not in text, text
    finally:
        gw.terminate()
        gw.wait(timeout=30)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the gateway sends until it closes the connection (fails after `within` s)."""
    deadline = time.monotonic() + within
    data = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the gateway kept the connection open; got {data!r}"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            continue
        if not chunk:
            return data
        data += chunk


def _response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers, body


MALFORMED = {
    "garbage request line": b"GARBAGE \x01\x02 NOT-HTTP\r\n\r\n",
    "100 KB header": b"GET /_declare/health HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"a" * 100_000
    + b"\r\n\r\n",
    "bad chunked encoding": b"POST /serving-endpoints/m/invocations HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
    "invalid Content-Length": b"POST /serving-endpoints/m/invocations HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: 12abc\r\n\r\n{}",
    "negative Content-Length": b"POST /serving-endpoints/m/invocations HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: -2\r\n\r\n{}",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=list(MALFORMED))
def test_a_request_aiohttp_refuses_gets_the_json_shape_and_a_close(
    gateway: Gateway, raw: bytes
) -> None:
    with _connect(gateway.port) as sock:
        sock.sendall(raw)
        status, headers, body = _response(_read_until_closed(sock, 5))
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)
    assert set(error) == {"error_code", "message"}
    assert error["error_code"] == "BAD_REQUEST"
    assert error["message"]


def _open(port: int, count: int, data: bytes) -> list[socket.socket]:
    """`count` connections, each sending `data` as soon as it is open (a connect can wait
    for the listen backlog, and the head timer starts at the gateway's accept)."""
    socks: list[socket.socket] = []
    for _ in range(count):
        socks.append(_connect(port))
        socks[-1].sendall(data)
    return socks


def _all_closed(socks: list[socket.socket], within: float) -> float:
    """Seconds until the gateway closed every socket in `socks` (fails after `within` s)."""
    start = time.monotonic()
    open_ = {s.fileno(): s for s in socks}
    while open_:
        left = start + within - time.monotonic()
        assert left > 0, f"{len(open_)} of {len(socks)} connections still open"
        readable, _, _ = select.select(list(open_), [], [], left)
        for fd in readable:
            try:
                data = open_[fd].recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                del open_[fd]
    return time.monotonic() - start


def test_sockets_that_send_half_a_head_are_closed_after_the_head_timeout(
    gateway: Gateway,
) -> None:
    socks = _open(gateway.port, 200, b"POST /serving-endpoints/m/invocations HTTP/1.1\r\nX-")
    try:
        assert _all_closed(socks, HEADER + 2) <= HEADER + 2  # before the idle timeout
    finally:
        for sock in socks:
            sock.close()


def test_idle_kept_alive_connections_are_closed_after_the_idle_timeout(gateway: Gateway) -> None:
    socks = _open(gateway.port, 200, b"GET /_declare/health HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        for sock in socks:  # each answered, and kept alive
            sock.settimeout(10)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        start = time.monotonic()
        with pytest.raises(AssertionError, match="still open"):
            _all_closed(socks, IDLE - 1)  # none closed early (the head timer has stopped)
        assert time.monotonic() - start + _all_closed(socks, 3) <= IDLE + 2
    finally:
        for sock in socks:
            sock.close()


def test_a_client_within_the_timeouts_keeps_its_connection(gateway: Gateway) -> None:
    with _connect(gateway.port) as sock:
        # requests spaced over the head timeout but below the idle timeout: one connection
        for _ in range(3):
            sock.sendall(b"GET /_declare/health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert json.loads(_response(answer)[2])["status"] == "ok"
            time.sleep(IDLE / 2)
