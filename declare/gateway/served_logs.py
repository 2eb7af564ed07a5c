"""A served model's logs and build logs, as Databricks' REST API serves them.

    GET /api/2.0/serving-endpoints/{name}/served-models/{served}/logs
        {"logs": text}: the last TAIL_LINES lines of each replica the routing table routes
        for that served entity, each under a header naming it (`==> id (served) <==`, as
        `declare logs` prints), at most REPLICA_BYTES bytes each and RESPONSE_BYTES in all
        (the SDK's `serving_endpoints.logs(name, served_model_name)`)
    GET /api/2.0/serving-endpoints/{name}/served-models/{served}/build-logs
        {"logs": text}: the output of the build of the entity's environment, its last
        BUILD_LINES lines (at most BUILD_BYTES), or the one line its provider gave instead
        when it built nothing (`serving_endpoints.build_logs(...)`)

Where the logs are comes from the routing table (`ReplicaTarget.logs`, `EndpointTable.
build_logs`, written by the providers into their handles: `declare.model.logs`); this
module reads them there (`logread.py`) and asks no provider. A replica whose table entry
names no log (started, or the table pushed, by an older declare), or whose log cannot be
read, gets a line
saying so and pointing at `declare logs` instead of failing the whole answer.

An unknown endpoint or served model is 404 RESOURCE_DOES_NOT_EXIST naming it. A served model
is known when the table routes it or the endpoint's description (config or pending_config)
lists it. Authentication is the middleware's (`server.py`), as for every read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from aiohttp import web

from declare.gateway.logread import LogUnavailable, file_tail, read_source
from declare.gateway.responses import error_response, no_such_endpoint
from declare.gateway.state import GatewayState
from declare.gateway.table import EndpointTable, ReplicaTarget
from declare.model.logs import BuildLog

__all__ = ["ServedLogs"]

TAIL_LINES = 200  # per replica
REPLICA_BYTES = 64 * 1024  # per replica
RESPONSE_BYTES = 1024 * 1024  # all replicas of one served model together
BUILD_LINES = 2000
BUILD_BYTES = 256 * 1024


def served_names(ep: EndpointTable) -> set[str]:
    """Every served model name the endpoint knows: routed, or in its description."""
    names = {ep.served_name(key) for key in [*ep.entities, *(k for k, _ in ep.routes)]}
    for section in ("config", "pending_config"):
        config = ep.description.get(section)
        if isinstance(config, Mapping):
            for entity in config.get("served_entities") or ():
                if isinstance(entity, Mapping) and isinstance(entity.get("name"), str):
                    names.add(entity["name"])
    return names


def _keys(ep: EndpointTable, served: str) -> list[str]:
    """The table's keys of `served`: one, or two while two generations share the traffic."""
    return [key for key in ep.entities if ep.served_name(key) == served]


def _not_served(ep: EndpointTable, served: str) -> web.Response:
    known = ", ".join(sorted(served_names(ep))) or "none"
    return error_response(
        404,
        "RESOURCE_DOES_NOT_EXIST",
        f"served model {served!r} does not exist in serving endpoint {ep.name!r}; "
        f"served models: {known}",
    )


def _header(replica: ReplicaTarget, served: str) -> str:
    return f"==> {replica.id} ({served}) <=="


class ServedLogs:
    """The two handlers, over the shared state (whose live table they only read)."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state

    def _find(self, request: web.Request) -> tuple[EndpointTable, str] | web.Response:
        name, served = request.match_info["name"], request.match_info["served"]
        ep = self._state.table.endpoints.get(name)
        if ep is None:
            return no_such_endpoint(name)
        if served not in served_names(ep):
            return _not_served(ep, served)
        return ep, served

    async def logs(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        ep, served = found
        replicas = [r for key in _keys(ep, served) for r in ep.entities[key]]
        if not replicas:
            return _logs(
                f"(no replica of {served!r} runs now; `declare logs {ep.name} {served}` "
                "shows the kept logs of stopped ones)"
            )
        texts = await asyncio.gather(*(_replica_log(ep.name, served, r) for r in replicas))
        return _logs(_bounded(zip(replicas, texts, strict=True), served))

    async def build_logs(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        ep, served = found
        keys = _keys(ep, served)
        builds = list(dict.fromkeys(ep.build_logs[k] for k in keys if k in ep.build_logs))
        if builds:
            texts = [await _build_log(build) for build in builds]
            return _logs("\n".join(texts))
        if any(ep.entities[k] for k in keys):
            return _logs(
                f"(the routing table names no build log for {served!r}: its replicas were "
                "started, or the table pushed, by a declare that did not record where it is)"
            )
        return _logs(
            f"(no replica of {served!r} runs now, and its build log is found through one; "
            "ask again once one runs)"
        )


def _logs(text: str) -> web.Response:
    return web.json_response({"logs": text})


async def _replica_log(endpoint: str, served: str, replica: ReplicaTarget) -> str:
    if replica.logs is None:
        return (
            "(the routing table does not say where this replica's log is: the replica was "
            "started, or the table pushed, by a declare that did not record it; "
            f"`declare logs {endpoint} {served}` shows it)"
        )
    try:
        return await read_source(replica.logs, TAIL_LINES, REPLICA_BYTES)
    except LogUnavailable as exc:
        return f"(cannot read this replica's log: {exc}; `declare logs {endpoint} {served}`)"


def _bounded(shown: Iterable[tuple[ReplicaTarget, str]], served: str) -> str:
    """The logs under their headers, at most RESPONSE_BYTES (the replicas past it are
    counted, not shown)."""
    parts: list[str] = []
    size = 0
    items = list(shown)
    for i, (replica, text) in enumerate(items):
        part = f"{_header(replica, served)}\n{text}"
        if parts and size + len(part.encode()) > RESPONSE_BYTES:
            parts.append(f"({len(items) - i} more replica(s) not shown: over the size limit)")
            break
        parts.append(part)
        size += len(part.encode())
    return "\n".join(parts)


async def _build_log(build: BuildLog) -> str:
    if build.file is None:
        return build.text or ""
    try:
        return await asyncio.to_thread(file_tail, build.file, BUILD_LINES, BUILD_BYTES)
    except LogUnavailable:
        return (
            "(no build log of this environment is kept by this project: its image was "
            "already there when the project first needed it, or the log was removed)"
        )
