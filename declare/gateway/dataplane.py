"""The gateway's data plane: POST /serving-endpoints/{name}/invocations.

Per request, in this order: the endpoint's rate limits (429 with Retry-After), the body
checks (Content-Type JSON or CSV, size, a JSON body must be an object), the choice of served
entity and replica (`balance.py`), and the forward to that replica with one retry on another
replica when the first could not be reached (`upstream.py`). Every request to a known
endpoint is then one sample of the metrics, and every error one warning in the log.

It reads the routing table once per request (`state.live`), so a request keeps the table it
started with. It does not authenticate (the middleware in `server.py` does) and serves
nothing but invocations.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Mapping

from aiohttp import web

from declare.gateway.balance import CompiledEndpoint, fallback_entities, pick_entity, pick_replica
from declare.gateway.config import GatewayConfig
from declare.gateway.responses import error_response, no_such_endpoint, too_large, unavailable
from declare.gateway.state import GatewayState, Live
from declare.gateway.table import ReplicaTarget
from declare.gateway.upstream import ConnectFailed, Upstream

log = logging.getLogger("declare.gateway")

JSON_TYPES = frozenset({"application/json"})
CSV_TYPES = frozenset({"text/csv"})


class DataPlane:
    """The invocations handler, over the shared state and the upstream session.

    Holds the state's never-replaced parts (in-flight counts, cursors, metrics, limiter)
    directly, and reads the replaceable `state.live` once per request.
    """

    def __init__(
        self,
        config: GatewayConfig,
        state: GatewayState,
        upstream: Upstream,
        retry_after: Mapping[str, str],
    ) -> None:
        self._state = state
        self._inflight = state.inflight
        self._cursors = state.cursors
        self._metrics = state.metrics
        self._limiter = state.limiter
        self._send = upstream.send
        self._max_body_bytes = config.max_body_bytes
        self._retry_after = retry_after
        # The caller: the bearer token when auth is on (the only one that passes), else anyone.
        self._caller = "token" if config.auth_token else "anonymous"

    async def invocations(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name = request.match_info["name"]
        live = self._state.live  # this request's table, whatever is pushed meanwhile
        endpoint = live.compiled.endpoints.get(name)
        if endpoint is None:
            return no_such_endpoint(name)
        limited = self._over_limit(endpoint)
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
        self._metrics.record(name, entity, (time.perf_counter() - started) * 1000.0, error)
        return response

    def _over_limit(self, endpoint: CompiledEndpoint) -> web.Response | None:
        """A 429 when the request would exceed one of the endpoint's rate limits."""
        limits = endpoint.table.rate_limits
        if not limits:
            return None
        wait = self._limiter.admit(endpoint.table.name, limits, self._caller)
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
        self, request: web.Request, live: Live, endpoint: CompiledEndpoint
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
        if size is not None and size > self._max_body_bytes:
            return too_large(self._max_body_bytes, size), None
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large(self._max_body_bytes, None), None
        if mime in JSON_TYPES:
            problem = json_problem(body)
            if problem is not None:
                return error_response(400, "BAD_REQUEST", problem), None
        entity = pick_entity(endpoint, random.random())
        if entity is None:
            return unavailable(
                f"serving endpoint {endpoint.table.name!r} has no routes", self._retry_after
            ), None
        content_type = request.headers["Content-Type"]
        return await self._forward(live, endpoint, entity, body, content_type)

    def _next_replica(
        self, endpoint: CompiledEndpoint, entity: str, exclude: frozenset[str] = frozenset()
    ) -> ReplicaTarget | None:
        key = (endpoint.table.name, entity)
        cursor = self._cursors.get(key, 0)
        self._cursors[key] = cursor + 1
        return pick_replica(endpoint.replicas(entity), self._inflight, cursor, exclude)

    async def _forward(
        self, live: Live, endpoint: CompiledEndpoint, entity: str, body: bytes, content_type: str
    ) -> tuple[web.Response, str]:
        """Send to a replica of `entity`; when it cannot be reached, once more elsewhere."""
        name = endpoint.table.name
        replica = self._next_replica(endpoint, entity)
        if replica is None:
            return unavailable(
                f"served entity {entity!r} of endpoint {name!r} has no ready replica",
                self._retry_after,
            ), entity
        try:
            return await self._send(live, replica, entity, body, content_type), entity
        except ConnectFailed as exc:
            self._metrics.record_connection_failure(name, entity)
            log.warning("replica %s of %s/%s unreachable: %s", replica.id, name, entity, exc)
            first = str(exc)
            failed = frozenset({replica.id})
        for candidate in fallback_entities(endpoint, entity):
            other = self._next_replica(endpoint, candidate, exclude=failed)
            if other is None:
                continue
            try:
                return await self._send(live, other, candidate, body, content_type), candidate
            except ConnectFailed as second:
                self._metrics.record_connection_failure(name, candidate)
                return unavailable(
                    f"replicas {replica.id} and {other.id} of endpoint {name!r} could not be "
                    f"reached ({second})",
                    self._retry_after,
                ), candidate
        return unavailable(
            f"replica {replica.id} of endpoint {name!r} could not be reached ({first}) and no "
            "other replica is ready",
            self._retry_after,
        ), entity


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def json_problem(body: bytes) -> str | None:
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
