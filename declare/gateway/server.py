"""The gateway's HTTP application: routes, authentication and error mapping, wired together.

Public (bearer auth when `auth_token` is set):
    POST /serving-endpoints/{name}/invocations     forwarded to one replica's /invocations
    GET  /api/2.0/serving-endpoints[/{name}]       endpoint descriptions (Databricks shapes)
    POST|PUT|PATCH|DELETE /api/2.0/serving-endpoints[/...]   403 PERMISSION_DENIED: declare
                                                   manages the endpoints (read-only API)
    GET  /api/2.0/serving-endpoints/{name}/metrics the endpoint's metrics (export_metrics)
    GET  /api/2.0/serving-endpoints/{name}/served-models/{served}/logs        its replicas'
    GET  /api/2.0/serving-endpoints/{name}/served-models/{served}/build-logs  logs, and the
                                                   build log of its environment (`logs`,
                                                   `build_logs`)
    GET  /metrics                                  every endpoint's metrics (Prometheus)
    A request over one of the endpoint's rate limits gets 429 REQUEST_LIMIT_EXCEEDED with
    Retry-After (see limits.py).
No auth:
    GET  /_declare/health, GET /.well-known/databricks-config (the SDK's probe: {})
Admin (header X-Declare-Admin-Token; from this host only, else 404):
    PUT|GET /_declare/admin/table, POST /_declare/admin/drain, GET /_declare/admin/metrics,
    GET /_declare/admin/demand[?wait=S]   demand per served entity (for the runtime)

Every error is JSON `{"error_code", "message"}` in the Databricks style, and no input ends
the process. The routing table is held as one reference: a push replaces it in a single
assignment, and a request keeps the table it started with.

The parts, sharing one `GatewayState` (state.py):
    dataplane.py    invocations: limits, body checks, entity/replica choice, one retry
    hold.py         requests held for a replica instead of 503 (endpoint `hold_seconds`)
    upstream.py     the pooled client session to the replicas
    management.py   the read-only management API and health
    served_logs.py  a served model's logs and build logs (read where the table says)
    admin.py        table push/get, drain, metrics, demand
    shadow.py       a shadow step's mirrors to a candidate, measured, never returned
This module builds them, adds the routes and holds the middleware (authentication, and
errors that escape a handler), and starts the capture writer (`capture/`) when a capture root
is set. At shutdown, held requests answer 503, demand long polls answer at once, the mirrors
of a shadow step (`shadow.py`) are cancelled, and the captured requests still buffered are
written. It does not parse command lines, pick an event loop or write logs anywhere: see
`__main__.py`. It never reads manifests or declare's state.
`GatewayConfig`, `describe_endpoint` and `error_response` are importable from here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from hmac import compare_digest

from aiohttp import web

from declare.gateway import ADMIN_HEADER
from declare.gateway.access import AccessLog, access_middleware
from declare.gateway.admin import AdminApi, kept_table
from declare.gateway.capture import CaptureBuffer, CaptureWriter
from declare.gateway.config import GatewayConfig
from declare.gateway.dataplane import DataPlane
from declare.gateway.management import ManagementApi, describe_endpoint
from declare.gateway.responses import error_response, too_large
from declare.gateway.served_logs import ServedLogs
from declare.gateway.shadow import Shadow
from declare.gateway.state import GatewayState
from declare.gateway.table import RoutingTable
from declare.gateway.upstream import Upstream

__all__ = ["Gateway", "GatewayConfig", "describe_endpoint", "error_response"]

log = logging.getLogger("declare.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _same_secret(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def _from_this_host(request: web.Request) -> bool:
    """Whether the caller is on this host: a loopback peer, or one whose address is the
    address it reached (declare's own admin client calling a gateway bound to a non-loopback
    address of this host). The admin API answers nobody else."""
    transport = request.transport
    local = transport.get_extra_info("sockname") if transport is not None else None
    try:
        peer = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    if peer.is_loopback:
        return True
    return isinstance(local, tuple) and bool(local) and str(local[0]) == str(peer)


class Gateway:
    """One gateway application: its shared state and the parts that serve from it."""

    def __init__(self, config: GatewayConfig) -> None:
        if not config.admin_token:
            raise ValueError("the admin token must not be empty")
        self.config = config
        capture = CaptureBuffer(config.capture_buffer, config.capture_flush_records)
        self.state = GatewayState(
            config.metrics_capacity, eject_seconds=config.eject_seconds, capture=capture
        )
        self.capture_writer = (
            None
            if config.capture_root is None
            else CaptureWriter(
                capture,
                config.capture_root,
                config.capture_flush_seconds,
                config.capture_max_payload_bytes,
            )
        )
        retry_after = {"Retry-After": str(config.retry_after_seconds)}
        self.upstream = Upstream(config, self.state.inflight, retry_after)
        self.shadow = Shadow(
            self.state.metrics.shadow,
            self.upstream.post,
            None if config.capture_root is None else capture,
            config.shadow_inflight,
            config.shadow_timeout,
        )
        self.state.on_table.append(self.shadow.table_changed)
        self.data_plane = DataPlane(config, self.state, self.upstream, retry_after, self.shadow)
        self.management = ManagementApi(self.state)
        self.served_logs = ServedLogs(self.state)
        self.admin = AdminApi(self.state, config.table_file)
        kept = kept_table(config.table_file)
        if kept is not None:
            self.state.set_table(kept)
        self._bearer = f"Bearer {config.auth_token}" if config.auth_token else None
        self.auth = self._bearer is not None
        self.access_log = None if config.access_log is None else AccessLog(config.access_log)

    @property
    def table(self) -> RoutingTable:
        return self.state.table

    def set_table(self, table: RoutingTable) -> None:
        self.state.set_table(table)

    def make_app(self) -> web.Application:
        outer = [] if self.access_log is None else [access_middleware(self.access_log, self.auth)]
        app = web.Application(
            middlewares=[*outer, self._middleware], client_max_size=self.config.max_body_bytes
        )
        routes = app.router
        routes.add_post("/serving-endpoints/{name}/invocations", self.data_plane.invocations)
        routes.add_get("/api/2.0/serving-endpoints", self.management.list_endpoints)
        routes.add_get("/api/2.0/serving-endpoints/", self.management.list_endpoints)
        for path in ("/api/2.0/serving-endpoints", "/api/2.0/serving-endpoints/"):
            routes.add_post(path, self.management.read_only)  # create
        for method in ("PUT", "PATCH", "DELETE"):
            routes.add_route(method, "/api/2.0/serving-endpoints/{name}", self.management.read_only)
            routes.add_route(
                method, "/api/2.0/serving-endpoints/{name}/{what}", self.management.read_only
            )
        routes.add_get("/api/2.0/serving-endpoints/{name}", self.management.get_endpoint)
        routes.add_get("/api/2.0/serving-endpoints/{name}/metrics", self.management.export_metrics)
        served = "/api/2.0/serving-endpoints/{name}/served-models/{served}"
        routes.add_get(f"{served}/logs", self.served_logs.logs)
        routes.add_get(f"{served}/build-logs", self.served_logs.build_logs)
        routes.add_get("/metrics", self.management.metrics)
        routes.add_get("/_declare/health", self.management.health)
        routes.add_get("/.well-known/databricks-config", self.management.host_metadata)
        routes.add_put("/_declare/admin/table", self.admin.put_table)
        routes.add_get("/_declare/admin/table", self.admin.get_table)
        routes.add_post("/_declare/admin/drain", self.admin.drain)
        routes.add_get("/_declare/admin/metrics", self.admin.metrics)
        routes.add_get("/_declare/admin/demand", self.admin.demand)
        app.on_startup.append(self.upstream.open)
        app.on_startup.append(self._start_capture)
        app.on_shutdown.append(self._release_waiters)
        app.on_cleanup.append(self.upstream.close)
        app.on_cleanup.append(self._stop_capture)
        if self.access_log is not None:
            app.on_cleanup.append(self._close_access_log)
        return app

    async def _start_capture(self, _app: web.Application) -> None:
        if self.capture_writer is not None:
            self.capture_writer.start()

    async def _stop_capture(self, _app: web.Application) -> None:
        """Write the captured requests still buffered, off the event loop."""
        if self.capture_writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.capture_writer.close)

    async def _close_access_log(self, _app: web.Application) -> None:
        if self.access_log is not None:
            self.access_log.close()

    async def _release_waiters(self, _app: web.Application) -> None:
        """Held requests answer 503 and demand long polls answer, so shutdown need not wait;
        the shadow's mirrors in flight are cancelled (and no more start)."""
        self.data_plane.holds.close()
        self.state.demand.close()
        await self.shadow.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_declare/admin/") and not _from_this_host(request):
            return error_response(404, "RESOURCE_DOES_NOT_EXIST", f"no such path: {path}")
        if path.startswith("/_declare/"):
            if path.startswith("/_declare/admin/") and not _same_secret(
                request.headers.get(ADMIN_HEADER), self.config.admin_token
            ):
                return error_response(
                    403, "PERMISSION_DENIED", f"admin requests need the {ADMIN_HEADER} header"
                )
        elif path.startswith("/.well-known/"):
            pass  # clients probe it before they authenticate (the SDK's host metadata)
        elif self._bearer is not None and not _same_secret(
            request.headers.get("Authorization"), self._bearer
        ):
            return error_response(
                401,
                "UNAUTHENTICATED",
                "this gateway needs an 'Authorization: Bearer <token>' header with a valid token",
            )
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            return error_response(
                405,
                "BAD_REQUEST",
                f"method {request.method} is not allowed on {path}; use {allowed}",
                headers={"Allow": allowed},
            )
        except web.HTTPNotFound:
            return error_response(
                404, "RESOURCE_DOES_NOT_EXIST", f"no such path: {request.method} {path}"
            )
        except web.HTTPRequestEntityTooLarge:
            return too_large(self.config.max_body_bytes, None)
        except web.HTTPException as exc:
            return error_response(exc.status, "BAD_REQUEST", exc.reason)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, path)
            return error_response(500, "INTERNAL_ERROR", "the gateway failed; see its log")
