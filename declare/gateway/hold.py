"""Holding requests whose served entity has no usable replica, instead of answering 503.

When an endpoint's `hold_seconds` (routing table) is above 0 and the entity drawn for a
request has no replica to pick (none in the table, or all ejected: `eject.py`), the request
waits here until one appears, then the data plane forwards it. A waiting request sleeps on
one `asyncio.Event` per (endpoint, entity), which a table push sets when it gives that entity
replicas (or drops the endpoint or the entity); while all of the entity's replicas are
ejected it also wakes when the first ejection ends. There is no polling loop per request.

At most `limit` requests (GatewayConfig `hold_queue`) are held per endpoint; beyond it, and
when `hold_seconds` pass first, the answer is 503 TEMPORARILY_UNAVAILABLE with Retry-After.
A held request is counted in its entity's `held` demand (`demand.py`) and wakes the runtime's
long poll; the counts are given back in `finally`, so a request the client abandons (its
handler is cancelled) leaks nothing.

This module does not choose replicas itself (the data plane passes its `pick`) and does not
forward anything.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from aiohttp import web

from declare.gateway.balance import CompiledEndpoint, CompiledTable, pick_entity
from declare.gateway.demand import EntityDemand
from declare.gateway.responses import no_such_endpoint, unavailable
from declare.gateway.state import GatewayState, Live
from declare.gateway.table import ReplicaTarget

Pick = Callable[[CompiledEndpoint, str, EntityDemand, frozenset[str]], ReplicaTarget | None]

EXPIRY_SLACK = 0.001  # wake just after an ejection ends, not just before


class Picked(NamedTuple):
    """What a held request got: the table it now uses, and the entity and replica."""

    live: Live
    endpoint: CompiledEndpoint
    entity: str
    demand: EntityDemand
    replica: ReplicaTarget


class _Waiter:
    """The entity one held request waits for, and that entity's demand record."""

    __slots__ = ("demand", "entity")

    def __init__(self, entity: str, demand: EntityDemand) -> None:
        self.entity = entity
        self.demand = demand


class HoldQueue:
    """The held requests: their count per endpoint and one wake-up event per entity.

    It registers itself with the state so that every table push wakes the entities that the
    push may have given a replica.
    """

    def __init__(
        self, state: GatewayState, pick: Pick, limit: int, retry_after: Mapping[str, str]
    ) -> None:
        self._state = state
        self._demand = state.demand
        self._ejections = state.ejections
        self._pick = pick
        self.limit = limit
        self._retry_after = retry_after
        self.held: dict[str, int] = {}  # endpoint -> requests held now
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._closing = False
        state.on_table.append(self.table_changed)

    async def hold(
        self, name: str, entity: str, seconds: float, exclude: frozenset[str] = frozenset()
    ) -> Picked | web.Response:
        """Wait up to `seconds` for a replica of `entity` (not in `exclude`); the pick, or the
        response to give (503 when the queue is full or the time ran out)."""
        held = self.held
        if held.get(name, 0) >= self.limit:
            return unavailable(
                f"served entity {entity!r} of endpoint {name!r} has no ready replica and the "
                f"hold queue is full ({self.limit} requests wait for one); retry later",
                self._retry_after,
            )
        started = time.monotonic()
        held[name] = held.get(name, 0) + 1
        waiter = _Waiter(entity, self._enter(self._demand.get(name, entity)))
        self._demand.notify()
        try:
            while True:
                found = self._try(name, waiter, exclude)
                if found is not None:
                    return found
                waited = time.monotonic() - started
                if waited >= seconds:
                    return unavailable(
                        f"served entity {waiter.entity!r} of endpoint {name!r} has no ready "
                        f"replica: the request waited {waited:.1f} s for one (hold_seconds "
                        f"{seconds:g})",
                        self._retry_after,
                    )
                await self._sleep(name, waiter.entity, seconds - waited)
        finally:
            left = held[name] - 1
            if left:
                held[name] = left
            else:
                del held[name]
            waiter.demand.held -= 1

    def _try(
        self, name: str, waiter: _Waiter, exclude: frozenset[str]
    ) -> Picked | web.Response | None:
        """A pick in the live table, the response to give up with, or None to keep waiting.

        When a push stopped routing the waiter's entity, the waiter moves to one drawn anew.
        """
        if self._closing:
            return unavailable("the gateway is stopping", self._retry_after)
        live = self._state.live
        endpoint = live.compiled.endpoints.get(name)
        if endpoint is None:
            return no_such_endpoint(name)
        if waiter.entity not in endpoint.entities:
            drawn = pick_entity(endpoint, random.random())
            if drawn is None:
                return unavailable(f"serving endpoint {name!r} has no routes", self._retry_after)
            waiter.demand.held -= 1
            waiter.entity, waiter.demand = drawn, self._enter(self._demand.get(name, drawn))
        replica = self._pick(endpoint, waiter.entity, waiter.demand, exclude)
        if replica is None:
            return None
        return Picked(live, endpoint, waiter.entity, waiter.demand, replica)

    @staticmethod
    def _enter(demand: EntityDemand) -> EntityDemand:
        demand.held += 1
        total = demand.inflight + demand.held
        if total > demand.peak:
            demand.peak = total
        return demand

    async def _sleep(self, name: str, entity: str, seconds: float) -> None:
        """Until a push may have given `entity` a replica, an ejection of one of its replicas
        ends, or `seconds` pass."""
        endpoint = self._state.live.compiled.endpoints.get(name)
        if endpoint is not None:
            retry_at = self._ejections.retry_at(r.id for r in endpoint.replicas(entity))
            if retry_at is not None:
                seconds = min(seconds, retry_at - time.monotonic() + EXPIRY_SLACK)
        key = (name, entity)
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        try:
            async with asyncio.timeout(max(seconds, 0.0)):
                await event.wait()
        except TimeoutError:
            pass

    def table_changed(self, compiled: CompiledTable) -> None:
        """Wake the entities a new table gives replicas (or no longer routes)."""
        events = self._events
        for key in list(events):
            name, entity = key
            endpoint = compiled.endpoints.get(name)
            if endpoint is None or entity not in endpoint.entities or endpoint.replicas(entity):
                events.pop(key).set()

    def close(self) -> None:
        """The gateway stops: every held request answers 503 now."""
        self._closing = True
        for event in self._events.values():
            event.set()
        self._events.clear()
