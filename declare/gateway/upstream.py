"""Sending one invocation to one replica over the gateway's pooled client session.

`Upstream` owns the aiohttp client session to all replicas (opened at application start-up,
closed at clean-up) and, while a request is on a replica, keeps the replica's count of
requests in flight and its entity's (`EntityDemand.inflight` and peak: `demand.py`). `send`
turns every failure of the replica into the response the client gets (503 when no pooled
connection was free in time, 504 when the replica did not answer in time, 502 when it
failed), except a failure before the replica sent anything, which raises `ConnectFailed` so
that the caller may retry elsewhere (and eject the replica: `eject.py`).

This module does not choose replicas, retry, hold, check request bodies or record metrics:
see `dataplane.py`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from declare.gateway.config import GatewayConfig
from declare.gateway.demand import EntityDemand
from declare.gateway.responses import error_response, unavailable
from declare.gateway.state import Live
from declare.gateway.table import ReplicaTarget


class ConnectFailed(Exception):
    """The replica could not be reached before it sent a response: safe to retry."""


class Upstream:
    """The pooled client session to the replicas, and the in-flight counts it keeps.

    `inflight` is the shared `GatewayState.inflight`: incremented while a request is on a
    replica, and the replica's key is removed when none is.
    """

    def __init__(
        self, config: GatewayConfig, inflight: dict[str, int], retry_after: Mapping[str, str]
    ) -> None:
        self._config = config
        self._inflight = inflight
        self._retry_after = retry_after
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=config.queue_timeout,
            sock_connect=config.connect_timeout,
            sock_read=config.upstream_timeout,
        )

    async def open(self, _app: web.Application) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._config.pool_size,
            limit_per_host=self._config.pool_per_replica,
            keepalive_timeout=self._config.keepalive_seconds,
            use_dns_cache=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

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
        session = self._session
        assert session is not None, "the client session opens at start-up"
        rid = replica.id
        inflight = self._inflight
        inflight[rid] = inflight.get(rid, 0) + 1
        busy = demand.inflight + 1
        demand.inflight = busy
        busy += demand.held
        if busy > demand.peak:
            demand.peak = busy
        started = time.perf_counter()
        responded = False
        try:
            async with session.post(
                live.urls[rid],
                data=body,
                # identity: the body is passed on as it comes, without Content-Encoding
                headers={"Content-Type": content_type, "Accept-Encoding": "identity"},
            ) as upstream:
                responded = True
                payload = await upstream.read()
                return web.Response(
                    status=upstream.status,
                    body=payload,
                    headers={
                        "Content-Type": upstream.headers.get("Content-Type", "application/json"),
                        "served-model-name": live.served.get(rid, entity),
                    },
                )
        except aiohttp.ClientError as exc:
            return self._failed(exc, rid, entity, responded, time.perf_counter() - started)
        finally:
            demand.inflight -= 1
            left = inflight[rid] - 1
            if left:
                inflight[rid] = left
            else:
                del inflight[rid]

    def _failed(
        self, exc: aiohttp.ClientError, rid: str, entity: str, responded: bool, waited: float
    ) -> web.Response:
        """The response for a failure of replica `rid`, or ConnectFailed when it is safe to
        retry (nothing was sent back)."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return self._connect_timed_out(exc, entity, waited)
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return error_response(
                504,
                "DEADLINE_EXCEEDED",
                f"replica {rid} of {entity!r} did not answer within "
                f"{self._config.upstream_timeout:g} s",
            )
        if isinstance(exc, aiohttp.ClientOSError | aiohttp.ServerDisconnectedError):
            if not responded:
                raise ConnectFailed(str(exc) or type(exc).__name__) from exc
            return error_response(
                502, "INTERNAL_ERROR", f"replica {rid} of {entity!r} failed mid-response: {exc}"
            )
        return error_response(502, "INTERNAL_ERROR", f"replica {rid} of {entity!r} failed: {exc!r}")

    def _connect_timed_out(
        self, exc: aiohttp.ConnectionTimeoutError, entity: str, waited: float
    ) -> web.Response:
        """503 when the wait was for a pooled connection slot; else a retryable failure."""
        queue_timeout = self._config.queue_timeout
        if waited >= queue_timeout * 0.98:
            return unavailable(
                f"no connection to a replica of {entity!r} was free within "
                f"{queue_timeout:g} s; the endpoint is overloaded",
                self._retry_after,
            )
        raise ConnectFailed(f"connect timed out: {exc}") from exc
