"""A small HTTP/1.1 server on asyncio and `httptools` (the parser uvicorn uses), for a replica.

`serve(sock, handler)` answers every request on the listening socket `sock` with
`await handler(Request)`, one request at a time per connection, in order (pipelined requests
wait their turn), with keep-alive as the client asks (HTTP/1.1 by default, HTTP/1.0 with
`Connection: keep-alive`), `100 Continue` for `Expect: 100-continue`, chunked request bodies
decoded, and `400 Invalid HTTP request received.` then close for bytes that are not HTTP (as
uvicorn answers). It returns when `stop` is set, after the requests in progress are answered
(or `grace_seconds` passed).

Why not uvicorn and Starlette: a replica's request costs a few hundred microseconds of
framework (ASGI scopes, middleware, a thread per request) for a prediction that costs about as
much; this module costs tens. What it does not do: TLS, HTTP/2, websockets, upgrades, access
logs, routing (the handler routes, `declare.serve.scoring`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools

__all__ = ["Handler", "Request", "Response", "serve"]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # names in lower case; a repeated header keeps its first value
    body: bytes
    query: str = ""  # what followed `?` in the target, if anything


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str  # "" sends no Content-Type
    headers: tuple[tuple[str, str], ...] = field(default=())


Handler = Callable[[Request], Awaitable[Response]]

_BAD_REQUEST = Response(400, b"Invalid HTTP request received.", "text/plain; charset=utf-8")
_REASONS = {status.value: status.phrase for status in HTTPStatus}


class _Clock:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
        return self._value


_clock = _Clock()


def _head(response: Response, keep_alive: bool) -> bytes:
    reason = _REASONS.get(response.status, "")
    lines = [
        f"HTTP/1.1 {response.status} {reason}".encode(),
        b"date: " + _clock.date(),
        b"server: declare",
        f"content-length: {len(response.body)}".encode(),
    ]
    if response.content_type:
        lines.append(b"content-type: " + response.content_type.encode("latin-1"))
    lines.extend(f"{name}: {value}".encode("latin-1") for name, value in response.headers)
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order."""

    def __init__(self, handler: Handler, connections: set[_Connection]) -> None:
        self._handler = handler
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._pending: deque[tuple[Request, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        self._connections.add(self)
        with contextlib.suppress(OSError):
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail()
        except httptools.HttpParserError:
            self._fail()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path, _, query = self._url.decode("latin-1").partition("?")
        method = self._parser.get_method().decode("latin-1")
        request = Request(method, path, self._headers, b"".join(self._body), query)
        self._pending.append((request, self._parser.should_keep_alive()))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._answer_pending())

    # -- answering ---------------------------------------------------------------------------

    async def _answer_pending(self) -> None:
        while self._pending and not self._closing:
            request, keep_alive = self._pending.popleft()
            try:
                response = await self._handler(request)
            except Exception as exc:  # the handler answers errors itself; this is a last guard
                print(f"declare.serve: {request.method} {request.path}: {exc!r}", file=sys.stderr)
                response = Response(500, b"Internal Server Error", "text/plain; charset=utf-8")
            if self._transport is None or self._transport.is_closing():
                return
            self._transport.write(_head(response, keep_alive) + response.body)
            if not keep_alive:
                self._closing = True
                self._transport.close()

    def _fail(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_head(_BAD_REQUEST, False) + _BAD_REQUEST.body)
            self._transport.close()
        self._closing = True

    def busy(self) -> bool:
        return bool(self._pending) or (self._worker is not None and not self._worker.done())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def serve(
    sock: socket.socket, handler: Handler, stop: asyncio.Event, grace_seconds: float = 30.0
) -> None:
    """Answer requests on `sock` until `stop` is set; then let busy connections finish."""
    loop = asyncio.get_running_loop()
    connections: set[_Connection] = set()
    server = await loop.create_server(
        lambda: _Connection(handler, connections), sock=sock, backlog=2048
    )
    async with server:
        await stop.wait()
        server.close()
        deadline = loop.time() + grace_seconds
        while any(c.busy() for c in connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(connections):
            connection.close()
