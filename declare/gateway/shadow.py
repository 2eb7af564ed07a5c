"""Shadow traffic: a share of an endpoint's requests mirrored to a candidate, measured only.

When an endpoint's table entry has `shadow` (a `ShadowTarget`: a rollout's shadow step),
each of its requests that a replica answered is one draw of `ShadowSampler`, which takes a
deterministic share of `percent` per endpoint and shadow key: the n-th request is mirrored
when (n * percent) // 100 advances, so at 50 % exactly every 2nd and at 10 % every 10th.
Once the user's answer is final, `Shadow.offer` starts a background task that sends the same
body with the same Content-Type (and no Authorization header) to one of the candidate's
replicas, round robin, as POST /invocations over the gateway's connection pool.

Each mirror becomes one `ShadowSample` of `ShadowMetrics` (metrics.py): the candidate's
latency and the user's, whether it failed (a 5xx, no connection, no answer within
`timeout`, or a 4xx where the user got a 2xx) and, when both answers are 2xx, how many rows
they have and how many differ (`declare.model.agreement.compare`, numbers within the
target's tolerance; off the event loop for large bodies). When the endpoint captures, the
candidate's answer is captured as a row of its own, flagged `shadow` (capture/).

Bounded: at most `limit` mirrors are in flight per gateway; a sampled request beyond that is
dropped and counted. The user's answer is never delayed, changed or failed by a mirror: it
is final before the mirror starts, and a mirror's failure is a figure, never an exception.
Requests the gateway answered itself (a 429, a 4xx before forwarding, a 503 without a
replica) are not offered (`dataplane.py` decides). A push without an endpoint's shadow
target cancels that target's mirrors in flight (`table_changed`); `close`, at shutdown,
cancels and awaits all of them. It does not judge the figures: declare's rollout does,
through GET /_declare/admin/metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from yarl import URL

from declare.gateway.balance import CompiledTable
from declare.gateway.capture.buffer import CaptureBuffer, Captured
from declare.gateway.metrics import ShadowMetrics, ShadowSample
from declare.gateway.pool import Answer, ConnectError, PoolError, QueueTimeout, ReadTimeout
from declare.gateway.table import EndpointTable, ReplicaTarget, ShadowTarget
from declare.model.agreement import Agreement, compare

log = logging.getLogger("declare.gateway")

DEFAULT_LIMIT = 64  # mirrors in flight per gateway
DEFAULT_TIMEOUT = 30.0  # seconds a candidate may take to answer one
# Answers compared on the event loop up to this size together; larger ones in a thread
# (parsing megabytes of JSON would stall every request for as long).
COMPARE_ON_LOOP_BYTES = 64 * 1024

# (url, body, content type, timeout) -> the answer, or a `PoolError` (Upstream.post)
Post = Callable[[URL, bytes, str, float], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Exchange:
    """A user's request and the answer the user got, as a mirror needs them."""

    request: bytes
    content_type: str
    status: int
    response: bytes
    primary_ms: float  # the time the gateway took to answer the user
    requester: str


class ShadowSampler:
    """Which requests are mirrored: a count of the draws per (endpoint, shadow key)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}

    def take(self, endpoint: str, key: str, percent: int) -> bool:
        """One more request of `endpoint`; True when it is one of the `percent` %."""
        n = self._counts.get((endpoint, key), 0) + 1
        self._counts[(endpoint, key)] = n
        return (n * percent) // 100 > ((n - 1) * percent) // 100

    def forget_except(self, keep: set[tuple[str, str]]) -> None:
        for pair in [p for p in self._counts if p not in keep]:
            del self._counts[pair]


class Shadow:
    """The mirrors in flight, the round-robin cursors over candidates, the sampler."""

    def __init__(
        self,
        metrics: ShadowMetrics,
        post: Post,
        capture: CaptureBuffer | None = None,
        limit: int = DEFAULT_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._metrics = metrics
        self._post = post
        self._capture = capture  # None: the gateway captures nothing
        self.limit = limit
        self.timeout = timeout
        self.sampler = ShadowSampler()
        self._tasks: dict[asyncio.Task[None], tuple[str, str]] = {}
        self._cursors: dict[tuple[str, str], int] = {}
        self._closed = False

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def offer(self, table: EndpointTable, exchange: Exchange) -> bool:
        """Mirror this answered request of `table` when it is sampled; True when a mirror
        started. Never raises and never waits."""
        target = table.shadow
        if target is None or self._closed:
            return False
        if not self.sampler.take(table.name, target.key, target.percent):
            return False
        if len(self._tasks) >= self.limit:
            dropped = ShadowSample(
                time.time(), table.name, target.key, 0.0, exchange.primary_ms, False, 0, 0, True
            )
            self._metrics.record(dropped, target.served_name)
            return False
        pair = (table.name, target.key)
        cursor = self._cursors.get(pair, 0)
        self._cursors[pair] = cursor + 1
        replica = target.replicas[cursor % len(target.replicas)]
        task = asyncio.get_running_loop().create_task(
            self._mirror(table, target, replica, exchange)
        )
        self._tasks[task] = pair
        task.add_done_callback(self._done)
        return True

    def table_changed(self, compiled: CompiledTable) -> None:
        """Cancel the mirrors of the shadow targets `compiled` no longer has, and forget
        their draws and cursors (the same target pushed again starts afresh)."""
        keep = {
            (name, ep.table.shadow.key)
            for name, ep in compiled.endpoints.items()
            if ep.table.shadow is not None
        }
        for task, pair in list(self._tasks.items()):
            if pair not in keep:
                task.cancel()
        self.sampler.forget_except(keep)
        for pair in [p for p in self._cursors if p not in keep]:
            del self._cursors[pair]

    async def close(self) -> None:
        """Start no more mirrors; cancel those in flight and wait until they ended."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("a shadow mirror failed unexpectedly", exc_info=exc)

    async def _mirror(
        self, table: EndpointTable, target: ShadowTarget, replica: ReplicaTarget, ex: Exchange
    ) -> None:
        """Send `ex`'s request to `replica`, compare, record, capture."""
        sent = time.time()
        started = time.perf_counter()
        url = URL(replica.url.rstrip("/") + "/invocations")
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._post(url, ex.request, ex.content_type, self.timeout)
        except (PoolError, TimeoutError) as exc:
            answer = failure(exc, replica, self.timeout)
            failed = True
        else:
            failed = False
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        status = answer.status
        agreement = Agreement(0, 0)
        if 200 <= ex.status < 300 and 200 <= status < 300:
            agreement = await agree(ex.response, answer.body, target.tolerance)
        error = failed or status >= 500 or (status >= 400 and 200 <= ex.status < 300)
        self._metrics.record(
            ShadowSample(
                time.time(), table.name, target.key, elapsed_ms, ex.primary_ms, error,
                agreement.rows, agreement.differing,
            ),
            target.served_name,
        )  # fmt: skip
        if error:
            log.warning(
                "shadow %s of %s: replica %s -> %d", target.key, table.name, replica.id, status
            )
        if self._capture is not None and table.capture is not None:
            self._capture.offer(
                Captured(
                    table.capture, table.name, target.served_name, target.model.name,
                    target.model.version, int(sent * 1000), status, int(elapsed_ms),
                    ex.request, answer.body, ex.requester, shadow=True,
                )
            )  # fmt: skip


async def mirror_answered(
    shadow: Shadow,
    request: web.Request,
    table: EndpointTable,
    response: web.Response,
    elapsed_ms: float,
    requester: str,
) -> None:
    """Offer a request of `table` that a replica answered with `response` to `shadow`
    (its body was read, so `read` returns it at once)."""
    body = await request.read()
    payload = response.body if isinstance(response.body, bytes) else b""
    exchange = Exchange(
        body, request.headers["Content-Type"], response.status, payload, elapsed_ms, requester
    )
    shadow.offer(table, exchange)


async def agree(serving: bytes, candidate: bytes, tolerance: float) -> Agreement:
    """`compare` of the two answers, in a thread when they are large."""
    if len(serving) + len(candidate) <= COMPARE_ON_LOOP_BYTES:
        return compare(serving, candidate, tolerance)
    return await asyncio.to_thread(compare, serving, candidate, tolerance)


def failure(exc: Exception, replica: ReplicaTarget, timeout: float) -> Answer:
    """The answer a mirror that got none stands for (as the gateway would have answered a
    user): 503 no connection free, 504 no answer in time, 502 unreachable or broken."""
    if isinstance(exc, QueueTimeout):
        status, code = 503, "TEMPORARILY_UNAVAILABLE"
        message = f"no connection to shadow replica {replica.id} was free: {exc}"
    elif isinstance(exc, ReadTimeout | TimeoutError):
        status, code = 504, "DEADLINE_EXCEEDED"
        message = f"shadow replica {replica.id} did not answer within {timeout:g} s"
    elif isinstance(exc, ConnectError):
        status, code = 502, "INTERNAL_ERROR"
        message = f"shadow replica {replica.id} could not be reached: {exc}"
    else:
        status, code = 502, "INTERNAL_ERROR"
        message = f"shadow replica {replica.id} failed mid-response: {exc}"
    body = json.dumps({"error_code": code, "message": message}).encode()
    return Answer(status, b"application/json", body)
