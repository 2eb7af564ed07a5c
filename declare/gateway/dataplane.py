"""The gateway's data plane: POST /serving-endpoints/{name}/invocations.

Per request, in this order: the endpoint's rate limits (429 with Retry-After), the body
checks (Content-Type JSON or CSV, size, a JSON body must be an object), the choice of served
entity and replica (`balance.py`, skipping ejected replicas: `eject.py`), and the forward to
that replica with one retry on another replica when the first could not be reached
(`upstream.py`); that replica is ejected for `eject_seconds`. When the entity has no replica
to pick and the endpoint's `hold_seconds` is above 0, the request is held until one appears
(`hold.py`), also after a failed connection that left no other replica. Every request to a
known endpoint is then one sample of the metrics, and every error one warning in the log;
the demand per entity (`demand.py`) is counted as it goes. When the endpoint captures (its
table entry has `capture`) and the gateway has a capture root, the request, its answer
(4xx, 429 and 5xx too) and who served it go to the capture buffer (`capture/`), which
writes them to the inference table from a thread of its own. When the endpoint has a shadow
target, a request a replica answered is then offered to `shadow.py`, which may mirror it to
the candidate in the background (the user's answer is final by then).

It reads the routing table once per request (`state.live`), so a request keeps the table it
started with. It does not authenticate (the middleware in `server.py` does) and serves
nothing but invocations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from declare.gateway.balance import CompiledEndpoint, fallback_entities, pick_entity, pick_replica
from declare.gateway.capture.intake import capture_exchange
from declare.gateway.config import GatewayConfig
from declare.gateway.demand import EntityDemand
from declare.gateway.hold import HoldQueue, Picked
from declare.gateway.limits import RateLimiter
from declare.gateway.responses import (
    error_response,
    no_such_endpoint,
    rate_limited,
    too_large,
    unavailable,
)
from declare.gateway.shadow import Shadow, mirror_answered
from declare.gateway.state import GatewayState, Live
from declare.gateway.table import ReplicaTarget
from declare.gateway.upstream import SERVED_MODEL_HEADER, ConnectFailed, Upstream

log = logging.getLogger("declare.gateway")

FULL_CHECK_BYTES = 1024 * 1024  # bodies up to this are parsed to check they are JSON objects
JSON_TYPES = frozenset({"application/json"})
CSV_TYPES = frozenset({"text/csv"})


class DataPlane:
    """The invocations handler, over the shared state and the upstream session.

    Holds the state's never-replaced parts (in-flight counts, demand records, ejections,
    metrics, limiter) directly, and reads the replaceable `state.live` once per request.
    Owns the queue of held requests (`holds`); offers answered requests to `shadow`.
    """

    def __init__(
        self,
        config: GatewayConfig,
        state: GatewayState,
        upstream: Upstream,
        retry_after: Mapping[str, str],
        shadow: Shadow,
    ) -> None:
        self._state = state
        self._inflight = state.inflight
        self._demand = state.demand
        self._records = state.demand.entities
        self._ejections = state.ejections
        self._metrics = state.metrics
        self._limiter = state.limiter
        self._send = upstream.send
        self._max_body_bytes = config.max_body_bytes
        self._body_timeout = config.body_timeout
        self._retry_after = retry_after
        # The caller: the bearer token when auth is on (the only one that passes), else anyone.
        self._caller = "token" if config.auth_token else "anonymous"
        self.holds = HoldQueue(state, self._pick, config.hold_queue, retry_after)
        self._capture_buffer = state.capture
        self._capture_on = config.capture_root is not None
        self.shadow = shadow

    async def invocations(self, request: web.Request) -> web.Response:
        arrived = time.time()
        started = time.perf_counter()
        name = request.match_info["name"]
        live = self._state.live  # this request's table, whatever is pushed meanwhile
        endpoint = live.compiled.endpoints.get(name)
        if endpoint is None:
            return _unknown_endpoint(self._state, name, self._retry_after)
        limited = over_limit(self._limiter, self._caller, endpoint)
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
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._metrics.record(name, entity, elapsed_ms, error, response.status)
        if self._capture_on and endpoint.table.capture is not None:
            await capture_exchange(
                self._capture_buffer, self._caller, request, endpoint.table, entity, response,
                arrived, elapsed_ms,
            )  # fmt: skip
        if endpoint.table.shadow is not None and SERVED_MODEL_HEADER in response.headers:
            await mirror_answered(
                self.shadow, request, endpoint.table, response, elapsed_ms, self._caller
            )
        return response

    async def _invoke(
        self, request: web.Request, live: Live, endpoint: CompiledEndpoint
    ) -> tuple[web.Response, str | None]:
        body = await read_body(request, self._max_body_bytes, self._body_timeout)
        if isinstance(body, web.Response):
            return body, None
        entity = pick_entity(endpoint, random.random())
        if entity is None:
            return unavailable(
                f"serving endpoint {endpoint.table.name!r} has no routes", self._retry_after
            ), None
        content_type = request.headers["Content-Type"]
        return await self._forward(live, endpoint, entity, body, content_type)

    def _pick(
        self,
        endpoint: CompiledEndpoint,
        entity: str,
        demand: EntityDemand,
        exclude: frozenset[str] = frozenset(),
    ) -> ReplicaTarget | None:
        """The replica of `entity` to use, skipping `exclude` and the ejected ones."""
        cursor = demand.cursor
        demand.cursor = cursor + 1
        ejections = self._ejections
        if ejections.until:
            exclude = ejections.excluding(exclude)
        return pick_replica(endpoint.replicas(entity), self._inflight, cursor, exclude)

    async def _forward(
        self, live: Live, endpoint: CompiledEndpoint, entity: str, body: bytes, content_type: str
    ) -> tuple[web.Response, str]:
        """Send to a replica of `entity` (held for one when it has none and the endpoint
        holds); when it cannot be reached, once more elsewhere."""
        name = endpoint.table.name
        demand = self._records.get((name, entity)) or self._demand.get(name, entity)
        demand.last_request_at = time.time()
        replica = self._pick(endpoint, entity, demand)
        if replica is None:
            picked = await self._unpicked(live, endpoint, entity)
            if not isinstance(picked, Picked):
                return picked, entity
            live, endpoint, entity, demand, replica = picked
        try:
            return await self._send(live, replica, demand, entity, body, content_type), entity
        except ConnectFailed as exc:
            unreachable(self._state, name, entity, replica, exc)
            first = str(exc)
        return await self._retry(live, endpoint, entity, replica, first, body, content_type)

    async def _unpicked(
        self, live: Live, endpoint: CompiledEndpoint, entity: str
    ) -> Picked | web.Response:
        """`entity` has no replica to pick. When all of its replicas are ejected, one of
        another routed entity (as after a failed connection); else one that a push brings,
        when the endpoint holds; else 503."""
        if endpoint.replicas(entity):
            target = self._fallback(endpoint, entity, frozenset())
            if target is not None:
                return Picked(live, endpoint, *target)
        hold = endpoint.table.hold_seconds if self.holds.limit > 0 else 0.0
        if hold <= 0:
            message = no_replica(endpoint, entity, self._ejections.seconds)
            return unavailable(message, self._retry_after)
        return await self.holds.hold(endpoint.table.name, entity, hold)

    async def _retry(
        self,
        live: Live,
        endpoint: CompiledEndpoint,
        entity: str,
        replica: ReplicaTarget,
        first: str,
        body: bytes,
        content_type: str,
    ) -> tuple[web.Response, str]:
        """After `replica` could not be reached: another replica of `entity` or of another
        routed entity, else (when the endpoint holds) the next replica `entity` gets."""
        name = endpoint.table.name
        failed = frozenset({replica.id})
        target = self._fallback(endpoint, entity, failed)
        hold = endpoint.table.hold_seconds if self.holds.limit > 0 else 0.0
        if target is None and hold > 0:
            held = await self.holds.hold(name, entity, hold, failed)
            if not isinstance(held, Picked):
                return held, entity
            live, target = held.live, (held.entity, held.demand, held.replica)
        if target is None:
            return unavailable(
                f"replica {replica.id} of endpoint {name!r} could not be reached ({first}) "
                "and no other replica is ready",
                self._retry_after,
            ), entity
        candidate, demand, other = target
        try:
            return await self._send(live, other, demand, candidate, body, content_type), candidate
        except ConnectFailed as second:
            unreachable(self._state, name, candidate, other, second)
            return unavailable(
                f"replicas {replica.id} and {other.id} of endpoint {name!r} could not be "
                f"reached ({second})",
                self._retry_after,
            ), candidate

    def _fallback(
        self, endpoint: CompiledEndpoint, entity: str, failed: frozenset[str]
    ) -> tuple[str, EntityDemand, ReplicaTarget] | None:
        """The first replica not in `failed` of `entity`, then of the other routed entities."""
        name = endpoint.table.name
        for candidate in fallback_entities(endpoint, entity):
            demand = self._demand.get(name, candidate)
            other = self._pick(endpoint, candidate, demand, failed)
            if other is not None:
                return candidate, demand, other
        return None


def unreachable(
    state: GatewayState, name: str, entity: str, replica: ReplicaTarget, exc: ConnectFailed
) -> None:
    """Count the failed connection, eject the replica and wake the runtime's long poll."""
    state.metrics.record_connection_failure(name, entity)
    ejections = state.ejections
    ejected = ejections.eject(replica.id)
    state.demand.notify()
    log.warning(
        "replica %s of %s/%s unreachable%s: %s",
        replica.id,
        name,
        entity,
        f" (skipped for {ejections.seconds:g} s)" if ejected else "",
        exc,
    )


def over_limit(
    limiter: RateLimiter, caller: str, endpoint: CompiledEndpoint
) -> web.Response | None:
    """A 429 when the request would exceed one of the endpoint's rate limits."""
    limits = endpoint.table.rate_limits
    if not limits:
        return None
    wait = limiter.admit(endpoint.table.name, limits, caller)
    return None if wait is None else rate_limited(endpoint.table.name, limits, wait)


def no_replica(endpoint: CompiledEndpoint, entity: str, eject_seconds: float) -> str:
    """Why `entity` has no replica to pick, for its 503."""
    replicas = endpoint.replicas(entity)
    message = f"served entity {entity!r} of endpoint {endpoint.table.name!r} has no ready replica"
    if replicas:  # then every one of them is ejected
        ids = ", ".join(r.id for r in replicas)
        message += f" ({ids} could not be reached: skipped for up to {eject_seconds:g} s)"
    return message


async def read_body(
    request: web.Request, max_body_bytes: int, timeout: float = 30.0
) -> bytes | web.Response:
    """The request's body, or the 4xx when its type, size, encoding or JSON is not
    acceptable, or 408 when the client takes over `timeout` s to send it (a slow sender
    holds no more than its own request)."""
    mime = request.content_type
    if mime not in JSON_TYPES and mime not in CSV_TYPES:
        shown = request.headers.get("Content-Type", "none")
        return error_response(
            415,
            "BAD_REQUEST",
            f"unsupported Content-Type {shown!r}; send application/json or text/csv",
        )
    size = request.content_length
    if size is not None and size > max_body_bytes:
        return too_large(max_body_bytes, size)
    try:
        if request.content.is_eof():  # all of it came with the headers: nothing to wait for
            body = await request.read()
        else:
            async with asyncio.timeout(timeout):
                body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return too_large(max_body_bytes, None)
    except RequestPayloadError as exc:  # a Content-Encoding that does not decode, a cut body
        why = str(exc).strip().splitlines()[-1].strip()
        response = error_response(400, "BAD_REQUEST", f"the request body cannot be read: {why}")
        response.force_close()  # aiohttp cannot read this connection's next request
        return response
    except TimeoutError:
        return error_response(
            408, "REQUEST_TIMEOUT", f"the request body was not received within {timeout:g} s"
        )
    if mime in JSON_TYPES:
        problem = json_problem(body)
        if problem is not None:
            return error_response(400, "BAD_REQUEST", problem)
    return body


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def json_problem(body: bytes) -> str | None:
    """Why `body` is not a JSON object, or None when it is one.

    A body over FULL_CHECK_BYTES is checked only for its outer braces: parsing megabytes on
    the event loop would stall every other request for as long (the replica parses it, and
    answers 400 when it is not JSON)."""
    if not body.strip():
        return 'the request body is empty; send a JSON object such as {"inputs": ...}'
    if len(body) > FULL_CHECK_BYTES:
        text = body.strip()
        if text[:1] == b"{" and text[-1:] == b"}":
            return None
        return (
            "the request body must be a JSON object (with dataframe_split, dataframe_records, "
            "instances or inputs)"
        )
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        return "the request body is not valid UTF-8 JSON"
    except RecursionError:
        return "the request body is nested too deeply to be read as JSON"
    except ValueError as exc:
        return f"the request body is not valid JSON: {exc}"
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        return (
            "the request body must be a JSON object (with dataframe_split, dataframe_records, "
            f"instances or inputs), not {kind}"
        )
    return None


def _unknown_endpoint(
    state: GatewayState, name: str, retry_after: Mapping[str, str]
) -> web.Response:
    """404 for an endpoint the table does not route; 503 + Retry-After while a gateway just
    started has no table yet (the routes apply is about to push may name it)."""
    if state.awaiting_table():
        return unavailable(
            f"the gateway started and awaits its routes; {name!r} may be among them",
            retry_after,
        )
    return no_such_endpoint(name)
