"""The gateway's read-only management API, metrics and health check.

    GET /api/2.0/serving-endpoints[/{name}]   endpoint descriptions (Databricks shapes)
    GET /api/2.0/serving-endpoints/{name}/metrics   the endpoint's metrics, Prometheus text
    (a served model's logs and build logs: `served_logs.py`)
    GET /metrics                              every endpoint's, Prometheus text
    POST, PUT, PATCH, DELETE on /api/2.0/serving-endpoints[/...]   403: declare manages them
    GET /.well-known/databricks-config        {} (the SDK's host metadata probe; no auth)
    GET /_declare/health                      pid, table version, endpoint count

Descriptions come from the routing table as declare pushed it, with defaults filled in
(`describe_endpoint`). Nothing here changes state, and nothing here authenticates (the
middleware in `server.py` does).
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from declare.gateway.balance import endpoint_ready
from declare.gateway.exposition import CONTENT_TYPE, EndpointCollector, GatewayCollector, render
from declare.gateway.responses import error_response, no_such_endpoint
from declare.gateway.state import GatewayState
from declare.gateway.table import EndpointTable


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


class ManagementApi:
    """The read-only handlers, over the shared state (whose live table they only read)."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state

    async def list_endpoints(self, _request: web.Request) -> web.Response:
        table = self._state.table
        return web.json_response(
            {"endpoints": [describe_endpoint(ep) for ep in table.endpoints.values()]}
        )

    async def get_endpoint(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        ep = self._state.table.endpoints.get(name)
        if ep is None:
            return no_such_endpoint(name)
        return web.json_response(describe_endpoint(ep))

    async def metrics(self, _request: web.Request) -> web.Response:
        return _prometheus(render(GatewayCollector(self._state)))

    async def export_metrics(self, request: web.Request) -> web.Response:
        """The SDK's `serving_endpoints.export_metrics(name)`."""
        name = request.match_info["name"]
        if name not in self._state.table.endpoints:
            return no_such_endpoint(name)
        return _prometheus(render(EndpointCollector(self._state, name)))

    async def read_only(self, request: web.Request) -> web.Response:
        """Every request that would change an endpoint (the SDK's and MLflow's create,
        update_config, put, patch, delete): 403 saying that declare manages it, so that a
        client stops at once instead of retrying; 404 for an endpoint the gateway does not
        serve (except create)."""
        name = request.match_info.get("name")
        if name is not None and name not in self._state.table.endpoints:
            return no_such_endpoint(name)
        what = f"serving endpoint {name!r} is" if name else "the serving endpoints here are"
        return error_response(
            403,
            "PERMISSION_DENIED",
            f"{what} managed by declare: this API is read-only ({request.method} "
            f"{request.path} is not served); change the manifest, then `declare plan` and "
            "`declare apply`",
        )

    async def host_metadata(self, _request: web.Request) -> web.Response:
        """GET /.well-known/databricks-config, which the Databricks SDK asks before it
        authenticates: no account, workspace or OIDC endpoint here (a bearer token only)."""
        return web.json_response({})

    async def health(self, _request: web.Request) -> web.Response:
        table = self._state.table
        return web.json_response(
            {
                "status": "ok",
                "pid": os.getpid(),
                "table_version": table.version,
                "endpoints": len(table.endpoints),
            }
        )


def _prometheus(body: bytes) -> web.Response:
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
