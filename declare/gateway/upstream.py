"""Sending one invocation to one replica over the gateway's connection pool.

`Upstream` owns the pool of kept-alive connections to all replicas (`pool.py`; closed at
clean-up) and, while a request is on a replica, keeps the replica's count of requests in
flight and its entity's (`EntityDemand.inflight` and peak: `demand.py`). `send` turns every
failure of the replica into the response the client gets (503 when no pooled connection was
free in time, 504 when the replica did not answer in time, 502 when it failed), except a
failure before the replica sent anything, which raises `ConnectFailed` so that the caller
may retry elsewhere (and eject the replica: `eject.py`). `post` sends one request outside
routing (a shadow's mirror: no in-flight counts, no demand) and lets the pool's errors out.

This module does not choose replicas, retry, hold, check request bodies or record metrics:
see `dataplane.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from yarl import URL

from declare.gateway.config import GatewayConfig
from declare.gateway.demand import EntityDemand
from declare.gateway.pool import (
    Answer,
    BrokenAnswer,
    ConnectError,
    ConnectionPool,
    QueueTimeout,
    ReadTimeout,
)
from declare.gateway.responses import error_response, unavailable
from declare.gateway.state import Live
from declare.gateway.table import ReplicaTarget

# The header of every answer a replica gave (the served entity's name), and only of those.
SERVED_MODEL_HEADER = "served-model-name"


class ConnectFailed(Exception):
    """The replica could not be reached before it sent a response: safe to retry."""


class Upstream:
    """The connection pool to the replicas, and the in-flight counts it keeps.

    `inflight` is the shared `GatewayState.inflight`: incremented while a request is on a
    replica, and the replica's key is removed when none is.
    """

    def __init__(
        self, config: GatewayConfig, inflight: dict[str, int], retry_after: Mapping[str, str]
    ) -> None:
        self._config = config
        self._inflight = inflight
        self._retry_after = retry_after
        self._read_timeout = config.upstream_timeout
        self._pool = ConnectionPool(
            total=config.pool_size,
            per_replica=config.pool_per_replica,
            queue_timeout=config.queue_timeout,
            connect_timeout=config.connect_timeout,
            keepalive_seconds=config.keepalive_seconds,
        )

    async def open(self, _app: web.Application) -> None:
        """Nothing to open: connections are made on first use."""

    async def close(self, _app: web.Application) -> None:
        await self._pool.close()

    async def send(
        self,
        live: Live,
        replica: ReplicaTarget,
        demand: EntityDemand,
        entity: str,
        body: bytes,
        content_type: str,
    ) -> web.Response:
        """The replica's response to `body`, passed on as it came, or the error to give.

        `demand` is the record of `entity`, whose in-flight count covers the wait for a
        connection slot and for the answer."""
        rid = replica.id
        url = live.urls[rid]
        inflight = self._inflight
        inflight[rid] = inflight.get(rid, 0) + 1
        busy = demand.inflight + 1
        demand.inflight = busy
        busy += demand.held
        if busy > demand.peak:
            demand.peak = busy
        host, port = url.raw_host or "127.0.0.1", url.port or 80
        head = request_head(url.raw_path_qs, host, port, content_type, len(body))
        try:
            answer = await self._pool.exchange(host, port, head, body, self._read_timeout)
        except ConnectError as exc:
            raise ConnectFailed(str(exc)) from exc
        except QueueTimeout:
            return unavailable(
                f"no connection to a replica of {entity!r} was free within "
                f"{self._config.queue_timeout:g} s; the endpoint is overloaded",
                self._retry_after,
            )
        except ReadTimeout:
            return error_response(
                504,
                "DEADLINE_EXCEEDED",
                f"replica {rid} of {entity!r} did not answer within {self._read_timeout:g} s",
            )
        except BrokenAnswer as exc:
            return error_response(
                502, "INTERNAL_ERROR", f"replica {rid} of {entity!r} failed mid-response: {exc}"
            )
        finally:
            demand.inflight -= 1
            left = inflight[rid] - 1
            if left:
                inflight[rid] = left
            else:
                del inflight[rid]
        content = answer.content_type
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={
                "Content-Type": content.decode("latin-1") if content else "application/json",
                SERVED_MODEL_HEADER: live.served.get(rid, entity),
            },
        )

    async def post(self, url: URL, body: bytes, content_type: str, timeout: float) -> Answer:
        """The answer of `url` to one POST of `body`, over the pool; the pool's errors
        (`pool.PoolError`) as they come. Counts nothing: not for routed requests."""
        host, port = url.raw_host or "127.0.0.1", url.port or 80
        head = request_head(url.raw_path_qs, host, port, content_type, len(body))
        return await self._pool.exchange(host, port, head, body, timeout)


def request_head(path: str, host: str, port: int, content_type: str, length: int) -> bytes:
    """The head of one POST to a replica; identity: the body is passed on as it comes,
    without Content-Encoding."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
        "Accept-Encoding: identity\r\n\r\n"
    ).encode("latin-1")
