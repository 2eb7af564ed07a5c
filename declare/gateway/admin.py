"""The gateway's admin interface, which declare drives (header X-Declare-Admin-Token).

    PUT  /_declare/admin/table     swap in a routing table (logged as one line; kept in the
                                   table file, which a gateway started again loads first)
    GET  /_declare/admin/table     the table in force
    POST /_declare/admin/drain     wait until replicas have no requests in flight
    GET  /_declare/admin/metrics   request metrics, optionally since a unix time; `capture`:
                                   the inference-table counters (captured, dropped, ...)
    GET  /_declare/admin/demand    demand per served entity, for the runtime's autoscaling:
                                   ?wait=S (0-30) answers early when a request becomes held
                                   or a replica cannot be reached (see demand.py)

Each handler validates its input and answers 400 with what is wrong. The admin token is
checked by the middleware in `server.py`, not here; this module never serves end users.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from aiohttp import web

from declare.gateway.demand import parse_wait
from declare.gateway.responses import error_response
from declare.gateway.state import GatewayState
from declare.gateway.table import RoutingTable

log = logging.getLogger("declare.gateway")


def keep_table(path: Path, data: object) -> None:
    """Write the table pushed last to `path` (atomically); a failure is logged only."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("the routing table could not be kept in %s: %s", path, exc)


def kept_table(path: Path | None) -> RoutingTable | None:
    """The table `keep_table` wrote, or None (no file, or one that does not parse)."""
    if path is None or not path.exists():
        return None
    try:
        return RoutingTable.from_json(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        log.warning("the kept routing table %s is not used: %s", path, exc)
        return None


class AdminApi:
    """The admin handlers, over the shared state: the only writer of its live table."""

    def __init__(self, state: GatewayState, table_file: Path | None = None) -> None:
        self._state = state
        self._table_file = table_file

    async def put_table(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError as exc:
            return error_response(400, "BAD_REQUEST", f"the routing table is not JSON: {exc}")
        try:
            table = RoutingTable.from_json(data)
        except ValueError as exc:
            return error_response(400, "INVALID_PARAMETER_VALUE", f"invalid routing table: {exc}")
        previous = self._state.table.version
        self._state.set_table(table)
        if self._table_file is not None:
            keep_table(self._table_file, data)
        log.info(
            "routing table v%d -> v%d: %s",
            previous,
            table.version,
            ", ".join(
                f"{name}[{'/'.join(f'{e}:{p}%' for e, p in ep.routes)}]"
                + (f"+shadow {ep.shadow.key}:{ep.shadow.percent}%" if ep.shadow else "")
                for name, ep in table.endpoints.items()
            )
            or "no endpoints",
        )
        return web.json_response({"version": table.version})

    async def get_table(self, _request: web.Request) -> web.Response:
        return web.json_response(self._state.table.to_json())

    async def drain(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError as exc:
            return error_response(400, "BAD_REQUEST", f"the drain request is not JSON: {exc}")
        ids = data.get("replica_ids") if isinstance(data, dict) else None
        timeout = data.get("timeout_seconds", 30) if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            return error_response(
                400, "INVALID_PARAMETER_VALUE", "replica_ids must be a list of strings"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            return error_response(
                400, "INVALID_PARAMETER_VALUE", "timeout_seconds must be a number >= 0"
            )
        inflight = self._state.inflight
        deadline = time.monotonic() + float(timeout)
        while any(inflight.get(rid, 0) for rid in ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        counts = {rid: inflight.get(rid, 0) for rid in ids}
        routed = set(self._state.live.urls)
        return web.json_response(
            {
                "drained": not any(counts.values()),
                "inflight": counts,
                "still_routed": sorted(rid for rid in ids if rid in routed),
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        raw = request.query.get("since")
        since: float | None = None
        if raw:
            try:
                since = float(raw)
            except ValueError:
                return error_response(
                    400, "INVALID_PARAMETER_VALUE", f"since must be unix seconds, not {raw!r}"
                )
        report = self._state.metrics.report(since)
        report["table_version"] = self._state.table.version
        report["capture"] = self._state.capture.stats()
        return web.json_response(report)

    async def demand(self, request: web.Request) -> web.Response:
        wait = parse_wait(request.query.get("wait"))
        if isinstance(wait, str):
            return error_response(400, "INVALID_PARAMETER_VALUE", wait)
        state = self._state
        await state.demand.wait(wait)
        return web.json_response(state.demand.report(state.live.compiled, state.ejections.active()))
