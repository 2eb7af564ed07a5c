"""Kept-alive HTTP/1.1 connections to the replicas: one request at a time on each.

`ConnectionPool.exchange(host, port, head, body, read_timeout)` sends one request (its head
and body written in one call) on an idle connection to `host:port`, or on a new one while the
replica has fewer than `per_replica` connections and all replicas fewer than `total`, or
after waiting up to `queue_timeout` seconds for one to be given back; it returns the
replica's `Answer` (status, Content-Type, body), parsed with `httptools` (the parser uvicorn
uses). A connection is given back after a whole answer that allows keep-alive and is closed
after `keepalive_seconds` idle (below uvicorn's 5 s, so a pooled socket is rarely stale).

Failures, as the caller must tell them apart:
    QueueTimeout     no connection slot within `queue_timeout` (the replica is saturated)
    ConnectError     the replica could not be reached, or it closed the connection before
                     any byte of an answer (nothing was answered: safe to send elsewhere).
                     A kept-alive connection that the replica closed while idle is retried
                     once on a new connection first.
    ReadTimeout      no byte came for `read_timeout` seconds while waiting for the answer
    BrokenAnswer     the answer stopped or was malformed after its first byte

Why not aiohttp's client: it cost a third of the gateway's CPU per request (request objects,
header multidicts, a task and two writes per request). This module knows only what the data
plane forwards: POST with a known length, answers with Content-Length, chunked, or until
close. It does not retry on another replica, choose replicas, or count anything (see
`upstream.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools


class PoolError(Exception):
    """A request to a replica that got no usable answer."""


class QueueTimeout(PoolError):
    pass


class ConnectError(PoolError):
    pass


class ReadTimeout(PoolError):
    pass


class BrokenAnswer(PoolError):
    pass


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: bytes | None
    body: bytes


class _Connection(asyncio.Protocol):
    """One TCP connection to a replica and the answer it is reading (at most one)."""

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.used = False  # has answered before: a failure may be a stale kept-alive socket
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._chunks: list[bytes] = []
        self._content_type: bytes | None = None
        self._header: bytes = b""
        self._started = False  # a byte of the current answer came
        self._framed = False  # the answer has a length or is chunked (else: until close)
        self._last_data = 0.0
        self.reusable = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._started = True
        self._last_data = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokenAnswer(f"malformed answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._started and not self._framed and self._parser.get_status_code():
            self._finish()  # an answer delimited by the end of the connection
        elif self._started:
            self._fail(BrokenAnswer("the replica closed the connection mid-answer"))
        else:
            why = str(exc) if exc else "the replica closed the connection"
            self._fail(ConnectError(why))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-type":
            self._content_type = value
        elif lowered == b"content-length" or lowered == b"transfer-encoding":
            self._framed = True

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self._parser.should_keep_alive()
        self._finish()

    # the exchange
    def send(self, data: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._chunks = []
        self._content_type = None
        self._started = self._framed = self.reusable = False
        self._last_data = time.monotonic()
        self.transport.write(data)
        return waiter

    def silent_for(self, now: float) -> float:
        return now - self._last_data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            body = b"".join(self._chunks)
            waiter.set_result(Answer(self._parser.get_status_code(), self._content_type, body))
        self._chunks = []

    def _fail(self, exc: PoolError) -> None:
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()


class ConnectionPool:
    """Idle connections per replica address, the slots in use, and who waits for one."""

    def __init__(
        self,
        total: int,
        per_replica: int,
        queue_timeout: float,
        connect_timeout: float,
        keepalive_seconds: float,
    ) -> None:
        self._total = total
        self._per_replica = per_replica
        self._queue_timeout = queue_timeout
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive_seconds
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._busy: dict[tuple[str, int], int] = {}  # slots taken (connections and connects)
        self._in_use = 0
        self._waiters: dict[tuple[str, int], deque[asyncio.Future[None]]] = {}
        self._closed = False

    async def exchange(
        self, host: str, port: int, head: bytes, body: bytes, read_timeout: float
    ) -> Answer:
        """The replica's answer to one request (`head` ends with the blank line)."""
        key = (host, port)
        await self._slot(key)
        try:
            conn = self._take_idle(key)
            if conn is not None:
                try:
                    return await self._on(conn, head + body, read_timeout)
                except ConnectError:
                    pass  # closed by the replica while idle: once more on a new connection
            conn = await self._connect(key)
            return await self._on(conn, head + body, read_timeout)
        finally:
            self._release(key)

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    async def _on(self, conn: _Connection, data: bytes, read_timeout: float) -> Answer:
        """Send on `conn`; give it back after a whole kept-alive answer, else close it."""
        waiter = conn.send(data)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(read_timeout, self._check_silence, conn, waiter, read_timeout)
        try:
            answer = await waiter
        except BaseException:
            conn.close()
            raise
        finally:
            timer.cancel()
        if conn.reusable and conn.transport is not None and not self._closed:
            conn.used = True
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.key, deque()).append(conn)
        else:
            conn.close()
        return answer

    def _check_silence(
        self, conn: _Connection, waiter: asyncio.Future[Answer], read_timeout: float
    ) -> None:
        """ReadTimeout when nothing came for `read_timeout` s, else look again later."""
        if waiter.done():
            return
        silent = conn.silent_for(time.monotonic())
        if silent >= read_timeout * 0.999:
            waiter.set_exception(ReadTimeout(f"no answer within {read_timeout:g} s"))
            return
        asyncio.get_running_loop().call_later(
            read_timeout - silent, self._check_silence, conn, waiter, read_timeout
        )

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_kept = time.monotonic() - self._keepalive
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be stale
            transport = conn.transport
            if (
                transport is not None
                and not transport.is_closing()
                and (conn.idle_since >= oldest_kept)
            ):
                self._drop_expired(idle, oldest_kept)
                return conn
            conn.close()
        return None

    @staticmethod
    def _drop_expired(idle: deque[_Connection], oldest_kept: float) -> None:
        while idle and idle[0].idle_since < oldest_kept:
            idle.popleft().close()

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(key), *key)
        except TimeoutError:
            raise ConnectError(f"connect timed out after {self._connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectError(exc.strerror or str(exc)) from exc
        return conn

    async def _slot(self, key: tuple[str, int]) -> None:
        """Take a connection slot for `key`, waiting up to `queue_timeout` s for one."""
        if self._free(key):
            self._take(key)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.setdefault(key, deque())
        queue.append(waiter)
        try:
            async with asyncio.timeout(self._queue_timeout):
                await waiter  # the releaser takes the slot for us
        except TimeoutError:
            if not (waiter.done() and not waiter.cancelled()):
                raise QueueTimeout(
                    f"no connection was free within {self._queue_timeout:g} s"
                ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release(key)  # given a slot as we were cancelled: pass it on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in queue:
                queue.remove(waiter)
            if not queue:
                self._waiters.pop(key, None)

    def _free(self, key: tuple[str, int]) -> bool:
        return self._busy.get(key, 0) < self._per_replica and self._in_use < self._total

    def _take(self, key: tuple[str, int]) -> None:
        self._busy[key] = self._busy.get(key, 0) + 1
        self._in_use += 1

    def _release(self, key: tuple[str, int]) -> None:
        left = self._busy[key] - 1
        if left:
            self._busy[key] = left
        else:
            del self._busy[key]
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        """Give freed slots to waiters, first to the replica's own, then to any other."""
        for key, queue in list(self._waiters.items()):
            while queue and self._free(key):
                waiter = queue.popleft()
                if not waiter.done():
                    self._take(key)
                    waiter.set_result(None)
