"""The gateway's access log: one JSON line per request, written off the event loop.

Each line holds `time` (UTC, ISO 8601 with milliseconds), `method`, `path` (without the
query string), `endpoint` and `entity` (when known: the served entity that answered),
`status`, `latency_ms` and `caller` (who called, as the gateway knows them: "token" for the
bearer token, "anonymous" without auth). Never a payload, a header value, a query string or
a token. Lines are handed to a queue and written by a `logging` listener thread
(`QueueHandler`/`QueueListener`), so the event loop never waits for the disk; `close` writes
what is queued. Opt-in (`gateway.access_log: true`): a line costs the event loop a few
microseconds.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from declare.gateway.upstream import SERVED_MODEL_HEADER


class AccessLog:
    """JSON lines to `path`, appended (the file is created with mode 0600)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._logger = logging.Logger("declare.gateway.access")  # not in the tree: no parents
        self._logger.addHandler(logging.handlers.QueueHandler(self._queue))
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._handler = handler
        self._listener.start()

    def record(
        self,
        method: str,
        path: str,
        endpoint: str | None,
        entity: str | None,
        status: int,
        latency_ms: float,
        caller: str,
        at: float | None = None,
    ) -> None:
        stamp = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
        line = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "method": method,
            "path": path,
            "endpoint": endpoint,
            "entity": entity,
            "status": status,
            "latency_ms": round(latency_ms, 3),
            "caller": caller,
        }
        self._logger.info(json.dumps(line, separators=(",", ":")))

    def close(self) -> None:
        """Write every queued line, then close the file."""
        self._listener.stop()
        self._handler.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def access_middleware(log: AccessLog, auth: bool) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The outermost middleware: times each request and writes its line once answered.
    `caller`: "admin" on the admin paths, "token" for a caller the bearer check let in,
    "anonymous" otherwise."""

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        arrived, started = time.time(), time.perf_counter()
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            path = request.path
            if path.startswith("/_declare/admin/"):
                caller = "admin"
            else:
                caller = "token" if auth and status != 401 else "anonymous"
            entity = response.headers.get(SERVED_MODEL_HEADER) if response is not None else None
            log.record(
                request.method,
                path,
                request.match_info.get("name"),
                entity,
                status,
                (time.perf_counter() - started) * 1000.0,
                caller,
                arrived,
            )

    return access
