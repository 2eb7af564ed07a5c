"""The gateway's HTTP application: data plane, read-only management API, admin interface.

Public (bearer auth when `auth_token` is set):
    POST /serving-endpoints/{name}/invocations     forwarded to one replica's /invocations
    GET  /api/2.0/serving-endpoints[/{name}]       endpoint descriptions (Databricks shapes)
    A request over one of the endpoint's rate limits gets 429 REQUEST_LIMIT_EXCEEDED with
    Retry-After (see limits.py).
No auth:
    GET  /_declare/health
Admin (header X-Declare-Admin-Token):
    PUT|GET /_declare/admin/table, POST /_declare/admin/drain, GET /_declare/admin/metrics

Every error is JSON `{"error_code", "message"}` in the Databricks style, and no input ends
the process. The routing table is held as one reference: a push replaces it in a single
assignment, and a request keeps the table it started with.

This module does not parse command lines, pick an event loop or write logs anywhere: see
`__main__.py`. It never reads manifests or declare's state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from hmac import compare_digest
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from declare.gateway import ADMIN_HEADER, MAX_BODY_BYTES
from declare.gateway.limits import RateLimiter
from declare.gateway.metrics import DEFAULT_CAPACITY, Metrics
from declare.gateway.routing import (
    CompiledEndpoint,
    CompiledTable,
    compile_table,
    endpoint_ready,
    fallback_entities,
    pick_entity,
    pick_replica,
)
from declare.gateway.table import EndpointTable, ReplicaTarget, RoutingTable

log = logging.getLogger("declare.gateway")

JSON_TYPES = frozenset({"application/json"})
CSV_TYPES = frozenset({"text/csv"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class GatewayConfig:
    admin_token: str
    auth_token: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    queue_timeout: float = 30.0  # longest wait for a connection slot to a replica
    upstream_timeout: float = 300.0  # longest wait for a replica's response (read timeout)
    connect_timeout: float = 5.0  # TCP connect to a replica
    pool_size: int = 1024  # connections to all replicas together
    pool_per_replica: int = 256  # connections to one replica
    keepalive_seconds: float = 4.0  # below uvicorn's 5 s, so a pooled socket is never stale
    retry_after_seconds: int = 1
    metrics_capacity: int = DEFAULT_CAPACITY


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error_code": code, "message": message}, status=status, headers=headers
    )


def describe_endpoint(ep: EndpointTable) -> dict[str, Any]:
    """The endpoint's description as served by the management API, with defaults filled in."""
    desc = dict(ep.description)
    desc.setdefault("name", ep.name)
    state = dict(desc.get("state") or {})
    if "ready" not in state:
        state["ready"] = "READY" if endpoint_ready(ep) else "NOT_READY"
    state.setdefault("config_update", "NOT_UPDATING")
    desc["state"] = state
    return desc


@dataclass(frozen=True)
class _Live:
    """Everything the data plane reads per request, swapped in as one reference."""

    compiled: CompiledTable
    urls: Mapping[str, URL]  # replica id -> its /invocations URL
    served: Mapping[str, str]  # replica id -> the served entity name it answers for


def _live(table: RoutingTable) -> _Live:
    urls: dict[str, URL] = {}
    served: dict[str, str] = {}
    for ep in table.endpoints.values():
        for key, replicas in ep.entities.items():
            for replica in replicas:
                urls[replica.id] = URL(replica.url.rstrip("/") + "/invocations")
                served[replica.id] = ep.served_name(key)
    return _Live(compile_table(table), urls, served)


class _ConnectFailed(Exception):
    """The replica could not be reached before it sent a response: safe to retry."""


def _same_secret(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


class Gateway:
    """The gateway's state (table, in-flight counts, metrics) and its request handlers."""

    def __init__(self, config: GatewayConfig) -> None:
        if not config.admin_token:
            raise ValueError("the admin token must not be empty")
        self.config = config
        self._live = _live(RoutingTable.empty())
        self.inflight: dict[str, int] = {}  # replica id -> requests in flight
        self._cursors: dict[tuple[str, str], int] = {}  # (endpoint, entity) -> round-robin
        self.metrics = Metrics(config.metrics_capacity)
        self.limiter = RateLimiter()
        self._session: aiohttp.ClientSession | None = None
        self._bearer = f"Bearer {config.auth_token}" if config.auth_token else None
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=config.queue_timeout,
            sock_connect=config.connect_timeout,
            sock_read=config.upstream_timeout,
        )
        self._retry_after = {"Retry-After": str(config.retry_after_seconds)}

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        return self._live.compiled.table

    def set_table(self, table: RoutingTable) -> None:
        live = _live(table)
        self._live = live  # the swap: one reference assignment
        keep = {
            (ep, ent)
            for ep, compiled in live.compiled.endpoints.items()
            for ent in compiled.entities
        }
        for key in [k for k in self._cursors if k not in keep]:
            del self._cursors[key]
        self.limiter.forget_except(live.compiled.endpoints)

    def make_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._middleware], client_max_size=self.config.max_body_bytes
        )
        app.router.add_post("/serving-endpoints/{name}/invocations", self.invocations)
        app.router.add_get("/api/2.0/serving-endpoints", self.list_endpoints)
        app.router.add_get("/api/2.0/serving-endpoints/{name}", self.get_endpoint)
        app.router.add_get("/_declare/health", self.health)
        app.router.add_put("/_declare/admin/table", self.admin_put_table)
        app.router.add_get("/_declare/admin/table", self.admin_get_table)
        app.router.add_post("/_declare/admin/drain", self.admin_drain)
        app.router.add_get("/_declare/admin/metrics", self.admin_metrics)
        app.on_startup.append(self._open_session)
        app.on_cleanup.append(self._close_session)
        return app

    async def _open_session(self, _app: web.Application) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.pool_size,
            limit_per_host=self.config.pool_per_replica,
            keepalive_timeout=self.config.keepalive_seconds,
            use_dns_cache=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def _close_session(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    # -- auth and error mapping ----------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_declare/"):
            if path.startswith("/_declare/admin/") and not _same_secret(
                request.headers.get(ADMIN_HEADER), self.config.admin_token
            ):
                return error_response(
                    403, "PERMISSION_DENIED", f"admin requests need the {ADMIN_HEADER} header"
                )
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
            return self._too_large(None)
        except web.HTTPException as exc:
            return error_response(exc.status, "BAD_REQUEST", exc.reason)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, path)
            return error_response(500, "INTERNAL_ERROR", "the gateway failed; see its log")

    def _too_large(self, size: int | None) -> web.Response:
        limit = self.config.max_body_bytes
        what = f"{size} bytes" if size is not None else "the request body"
        return error_response(
            413, "BAD_REQUEST", f"{what} exceeds the gateway's limit of {limit} bytes"
        )

    # -- data plane ---------------------------------------------------------------------

    async def invocations(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name = request.match_info["name"]
        live = self._live  # this request's table, whatever is pushed meanwhile
        endpoint = live.compiled.endpoints.get(name)
        if endpoint is None:
            return error_response(
                404, "RESOURCE_DOES_NOT_EXIST", f"serving endpoint {name!r} does not exist"
            )
        limited = self._over_limit(request, endpoint)
        if limited is not None:
            response, entity = limited, None
        else:
            response, entity = await self._invoke(request, live, endpoint)
        # An error is any 5xx, and any 4xx that a replica gave once an entity was chosen:
        # MLflow's scoring server answers 400 when the model itself raises, which a rollout
        # guard must see. Requests the gateway refused up front (bad JSON) count for the
        # endpoint only, not against an entity.
        error = response.status >= 500 or (entity is not None and response.status >= 400)
        if error:
            log.warning(
                "%s %s -> %d (entity %s): %s",
                request.method,
                request.path,
                response.status,
                entity,
                response.text if response.content_type == "application/json" else "",
            )
        self.metrics.record(name, entity, (time.perf_counter() - started) * 1000.0, error)
        return response

    def _over_limit(self, request: web.Request, endpoint: CompiledEndpoint) -> web.Response | None:
        """A 429 when the request would exceed one of the endpoint's rate limits."""
        limits = endpoint.table.rate_limits
        if not limits:
            return None
        # The caller: the bearer token when auth is on (the only one that passes), else anyone.
        caller = "token" if self._bearer is not None else "anonymous"
        wait = self.limiter.admit(endpoint.table.name, limits, caller)
        if wait is None:
            return None
        shown = ", ".join(f"{r.calls} calls per {r.renewal_period} ({r.key})" for r in limits)
        return error_response(
            429,
            "REQUEST_LIMIT_EXCEEDED",
            f"serving endpoint {endpoint.table.name!r} is over its rate limit ({shown}); "
            f"retry in {math.ceil(wait)} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    async def _invoke(
        self, request: web.Request, live: _Live, endpoint: CompiledEndpoint
    ) -> tuple[web.Response, str | None]:
        mime = request.content_type
        if mime not in JSON_TYPES and mime not in CSV_TYPES:
            shown = request.headers.get("Content-Type", "none")
            return error_response(
                415,
                "BAD_REQUEST",
                f"unsupported Content-Type {shown!r}; send application/json or text/csv",
            ), None
        size = request.content_length
        if size is not None and size > self.config.max_body_bytes:
            return self._too_large(size), None
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(None), None
        if mime in JSON_TYPES:
            problem = _json_problem(body)
            if problem is not None:
                return error_response(400, "BAD_REQUEST", problem), None
        entity = pick_entity(endpoint, random.random())
        if entity is None:
            return self._unavailable(
                f"serving endpoint {endpoint.table.name!r} has no routes"
            ), None
        content_type = request.headers["Content-Type"]
        return await self._forward(live, endpoint, entity, body, content_type)

    def _unavailable(self, message: str) -> web.Response:
        return error_response(503, "TEMPORARILY_UNAVAILABLE", message, headers=self._retry_after)

    def _next_replica(
        self, endpoint: CompiledEndpoint, entity: str, exclude: frozenset[str] = frozenset()
    ) -> ReplicaTarget | None:
        key = (endpoint.table.name, entity)
        cursor = self._cursors.get(key, 0)
        self._cursors[key] = cursor + 1
        return pick_replica(endpoint.replicas(entity), self.inflight, cursor, exclude)

    async def _forward(
        self, live: _Live, endpoint: CompiledEndpoint, entity: str, body: bytes, content_type: str
    ) -> tuple[web.Response, str]:
        name = endpoint.table.name
        replica = self._next_replica(endpoint, entity)
        if replica is None:
            return self._unavailable(
                f"served entity {entity!r} of endpoint {name!r} has no ready replica"
            ), entity
        try:
            return await self._send(live, replica, entity, body, content_type), entity
        except _ConnectFailed as exc:
            self.metrics.record_connection_failure(name, entity)
            log.warning("replica %s of %s/%s unreachable: %s", replica.id, name, entity, exc)
            first = str(exc)
            failed = frozenset({replica.id})
        for candidate in fallback_entities(endpoint, entity):
            other = self._next_replica(endpoint, candidate, exclude=failed)
            if other is None:
                continue
            try:
                return await self._send(live, other, candidate, body, content_type), candidate
            except _ConnectFailed as second:
                self.metrics.record_connection_failure(name, candidate)
                return self._unavailable(
                    f"replicas {replica.id} and {other.id} of endpoint {name!r} could not be "
                    f"reached ({second})"
                ), candidate
        return self._unavailable(
            f"replica {replica.id} of endpoint {name!r} could not be reached ({first}) and no "
            "other replica is ready"
        ), entity

    async def _send(
        self, live: _Live, replica: ReplicaTarget, entity: str, body: bytes, content_type: str
    ) -> web.Response:
        session = self._session
        assert session is not None, "the client session opens at start-up"
        rid = replica.id
        inflight = self.inflight
        inflight[rid] = inflight.get(rid, 0) + 1
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
        except aiohttp.ConnectionTimeoutError as exc:
            waited = time.perf_counter() - started
            if waited >= self.config.queue_timeout * 0.98:
                return self._unavailable(
                    f"no connection to a replica of {entity!r} was free within "
                    f"{self.config.queue_timeout:g} s; the endpoint is overloaded"
                )
            raise _ConnectFailed(f"connect timed out: {exc}") from exc
        except aiohttp.SocketTimeoutError:
            return error_response(
                504,
                "DEADLINE_EXCEEDED",
                f"replica {rid} of {entity!r} did not answer within "
                f"{self.config.upstream_timeout:g} s",
            )
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            if not responded:
                raise _ConnectFailed(str(exc) or type(exc).__name__) from exc
            return error_response(
                502, "INTERNAL_ERROR", f"replica {rid} of {entity!r} failed mid-response: {exc}"
            )
        except aiohttp.ClientError as exc:
            return error_response(
                502, "INTERNAL_ERROR", f"replica {rid} of {entity!r} failed: {exc!r}"
            )
        finally:
            left = inflight[rid] - 1
            if left:
                inflight[rid] = left
            else:
                del inflight[rid]

    # -- management API (read-only) -------------------------------------------------------

    async def list_endpoints(self, _request: web.Request) -> web.Response:
        table = self.table
        return web.json_response(
            {"endpoints": [describe_endpoint(ep) for ep in table.endpoints.values()]}
        )

    async def get_endpoint(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        ep = self.table.endpoints.get(name)
        if ep is None:
            return error_response(
                404, "RESOURCE_DOES_NOT_EXIST", f"serving endpoint {name!r} does not exist"
            )
        return web.json_response(describe_endpoint(ep))

    async def health(self, _request: web.Request) -> web.Response:
        table = self.table
        return web.json_response(
            {
                "status": "ok",
                "pid": os.getpid(),
                "table_version": table.version,
                "endpoints": len(table.endpoints),
            }
        )

    # -- admin ----------------------------------------------------------------------------

    async def admin_put_table(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError as exc:
            return error_response(400, "BAD_REQUEST", f"the routing table is not JSON: {exc}")
        try:
            table = RoutingTable.from_json(data)
        except ValueError as exc:
            return error_response(400, "INVALID_PARAMETER_VALUE", f"invalid routing table: {exc}")
        previous = self.table.version
        self.set_table(table)
        log.info(
            "routing table v%d -> v%d: %s",
            previous,
            table.version,
            ", ".join(
                f"{name}[{'/'.join(f'{e}:{p}%' for e, p in ep.routes)}]"
                for name, ep in table.endpoints.items()
            )
            or "no endpoints",
        )
        return web.json_response({"version": table.version})

    async def admin_get_table(self, _request: web.Request) -> web.Response:
        return web.json_response(self.table.to_json())

    async def admin_drain(self, request: web.Request) -> web.Response:
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
        deadline = time.monotonic() + float(timeout)
        while any(self.inflight.get(rid, 0) for rid in ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        counts = {rid: self.inflight.get(rid, 0) for rid in ids}
        routed = set(self._live.urls)
        return web.json_response(
            {
                "drained": not any(counts.values()),
                "inflight": counts,
                "still_routed": sorted(rid for rid in ids if rid in routed),
            }
        )

    async def admin_metrics(self, request: web.Request) -> web.Response:
        raw = request.query.get("since")
        since: float | None = None
        if raw:
            try:
                since = float(raw)
            except ValueError:
                return error_response(
                    400, "INVALID_PARAMETER_VALUE", f"since must be unix seconds, not {raw!r}"
                )
        report = self.metrics.report(since)
        report["table_version"] = self.table.version
        return web.json_response(report)


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _json_problem(body: bytes) -> str | None:
    """Why `body` is not a JSON object, or None when it is one."""
    if not body:
        return 'the request body is empty; send a JSON object such as {"inputs": ...}'
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        return "the request body is not valid UTF-8 JSON"
    except ValueError as exc:
        return f"the request body is not valid JSON: {exc}"
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        return (
            "the request body must be a JSON object (with dataframe_split, dataframe_records, "
            f"instances or inputs), not {kind}"
        )
    return None
