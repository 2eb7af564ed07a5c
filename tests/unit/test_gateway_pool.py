"""The gateway's connections to replicas (`declare.gateway.pool`) against small real servers
on 127.0.0.1, each written to misbehave in one way a replica can: answers framed by length,
chunks or the end of the connection, kept-alive sockets the replica closed, silence, answers
cut short, and more callers than connection slots."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from declare.gateway.pool import (
    BrokenAnswer,
    ConnectError,
    ConnectionPool,
    QueueTimeout,
    ReadTimeout,
)

Reply = Callable[[int, int], Awaitable[bytes | None]]  # (connection no., request no.) -> bytes


@dataclass
class Replica:
    """A TCP server reading requests (head and Content-Length body) and answering `reply`."""

    reply: Reply
    close_after: bool = False  # close each connection after its first answer
    connections: int = 0
    busy: int = 0
    most_busy: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn, served = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                served += 1
                self.busy += 1
                self.most_busy = max(self.most_busy, self.busy)
                try:
                    answer = await self.reply(conn, served)
                finally:
                    self.busy -= 1
                if answer is None:  # close without answering
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after or b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"predictions": [1]}') -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def serve(reply: Reply, close_after: bool = False) -> tuple[Replica, asyncio.Server]:
    replica = Replica(reply, close_after)
    server = await asyncio.start_server(replica.handle, "127.0.0.1", 0)
    replica.port = server.sockets[0].getsockname()[1]
    return replica, server


def pool(**kw: float) -> ConnectionPool:
    settings: dict[str, float] = {
        "total": 64,
        "per_replica": 16,
        "queue_timeout": 5.0,
        "connect_timeout": 2.0,
        "keepalive_seconds": 4.0,
    } | kw
    return ConnectionPool(
        total=int(settings["total"]),
        per_replica=int(settings["per_replica"]),
        queue_timeout=settings["queue_timeout"],
        connect_timeout=settings["connect_timeout"],
        keepalive_seconds=settings["keepalive_seconds"],
    )


BODY = b'{"inputs": [[1, 2]]}'


def head(port: int) -> bytes:
    return (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))  # a liveness bound, not a timing assertion


def test_answers_by_length_chunks_and_close_and_the_socket_is_kept() -> None:
    async def reply(_conn: int, n: int) -> bytes:
        if n == 1:
            return ok()
        if n == 2:
            return (
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                b'Transfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n'
            )
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/csv\r\n\r\nx,y\n"

    async def test() -> None:
        replica, server = await serve(reply)
        p = pool()
        first = await p.exchange("127.0.0.1", replica.port, head(replica.port), BODY, 5)
        second = await p.exchange("127.0.0.1", replica.port, head(replica.port), BODY, 5)
        third = await p.exchange("127.0.0.1", replica.port, head(replica.port), BODY, 5)
        assert (first.status, first.content_type, first.body) == (
            200, b"application/json", b'{"predictions": [1]}',
        )  # fmt: skip
        assert (second.status, second.body) == (400, b'{"a": 1}')
        assert (third.status, third.content_type, third.body) == (200, b"text/csv", b"x,y\n")
        assert replica.connections == 1  # one kept-alive socket for all three
        assert replica.requests[0] == head(replica.port) + BODY
        await p.close()
        server.close()

    run(test)


def test_a_kept_socket_the_replica_closed_is_replaced_without_an_error() -> None:
    async def reply(_conn: int, n: int) -> bytes | None:
        return ok() if n == 1 else None  # each connection answers once, then closes

    async def test() -> None:
        replica, server = await serve(reply)
        p = pool()
        for _ in range(3):
            answer = await p.exchange("127.0.0.1", replica.port, head(replica.port), BODY, 5)
            assert answer.status == 200
        assert replica.connections >= 3
        await p.close()
        server.close()

    run(test)


def test_a_new_connection_closed_unanswered_or_refused_is_a_connect_error() -> None:
    async def reply(_conn: int, _n: int) -> None:
        return None

    async def test() -> None:
        replica, server = await serve(reply)
        p = pool()
        with pytest.raises(ConnectError):
            await p.exchange("127.0.0.1", replica.port, head(replica.port), BODY, 5)
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectError):
            await p.exchange("127.0.0.1", replica.port, head(replica.port), BODY, 5)
        await p.close()

    run(test)


def test_silence_is_a_read_timeout_and_a_cut_answer_is_broken() -> None:
    async def silent(_conn: int, _n: int) -> bytes:
        await asyncio.sleep(3)
        return ok()

    async def cut(_conn: int, _n: int) -> bytes:
        return b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial'

    async def test() -> None:
        slow, server = await serve(silent)
        p = pool()
        with pytest.raises(ReadTimeout):
            await p.exchange("127.0.0.1", slow.port, head(slow.port), BODY, 0.3)
        server.close()
        broken, server2 = await serve(cut, close_after=True)
        with pytest.raises(BrokenAnswer):
            await p.exchange("127.0.0.1", broken.port, head(broken.port), BODY, 5)
        await p.close()
        server2.close()

    run(test)


def test_callers_beyond_the_slots_wait_for_one_or_get_a_queue_timeout() -> None:
    async def reply(_conn: int, _n: int) -> bytes:
        await asyncio.sleep(0.2)
        return ok()

    async def test() -> None:
        replica, server = await serve(reply)
        p = pool(per_replica=2, queue_timeout=10)
        answers = await asyncio.gather(
            *(p.exchange("127.0.0.1", replica.port, head(replica.port), BODY, 5) for _ in range(6))
        )
        assert [a.status for a in answers] == [200] * 6
        assert replica.most_busy == 2 and replica.connections == 2
        tight = pool(per_replica=1, queue_timeout=0.05)
        results = await asyncio.gather(
            *(tight.exchange("127.0.0.1", replica.port, head(replica.port), BODY, 5)
              for _ in range(2)),
            return_exceptions=True,
        )  # fmt: skip
        assert sorted(type(r).__name__ for r in results) == ["Answer", "QueueTimeout"]
        assert isinstance(next(r for r in results if isinstance(r, Exception)), QueueTimeout)
        await p.close()
        await tight.close()
        server.close()

    run(test)


def test_an_idle_socket_older_than_the_keepalive_is_not_reused() -> None:
    async def reply(_conn: int, _n: int) -> bytes:
        return ok()

    async def test() -> None:
        replica, server = await serve(reply)
        p = pool(keepalive_seconds=0.0)
        for _ in range(3):
            await p.exchange("127.0.0.1", replica.port, head(replica.port), BODY, 5)
        assert replica.connections == 3
        await p.close()
        server.close()

    run(test)
