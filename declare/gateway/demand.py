"""Demand per served entity, for the runtime that autoscales: GET /_declare/admin/demand.

For every (endpoint, entity key) the gateway keeps one `EntityDemand`:

    inflight          requests admitted to the entity and not finished: waiting for a
                      connection slot to one of its replicas or for the replica's answer
    held              requests waiting for the entity to get a usable replica (`hold.py`)
    peak              the most of inflight + held at once since the last report
    last_request_at   unix seconds of the last request to the entity, None before any

The data plane updates these fields directly (a few attribute updates per request); the
record also carries the entity's round-robin cursor, so that one dict lookup per request
serves both the replica choice and the counts. A report resets every peak to the current
inflight + held.

`DemandBoard.wait` is the long poll of `?wait=`: it returns as soon as something the runtime
must react to happened since the last report (`notify`: a request became held, a replica
could not be reached), or when the time is up. No I/O, no HTTP; one event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from typing import Any

from declare.gateway.balance import CompiledTable
from declare.gateway.table import ReplicaTarget

MAX_WAIT_SECONDS = 30.0


class EntityDemand:
    """The live counts of one (endpoint, entity), and its round-robin cursor."""

    __slots__ = ("cursor", "held", "inflight", "last_request_at", "peak")

    def __init__(self) -> None:
        self.cursor = 0
        self.inflight = 0
        self.held = 0
        self.peak = 0
        self.last_request_at: float | None = None

    @property
    def busy(self) -> bool:
        return self.inflight > 0 or self.held > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "inflight": self.inflight,
            "held": self.held,
            "peak": self.peak,
            "last_request_at": self.last_request_at,
        }


class DemandBoard:
    """The `EntityDemand` of every (endpoint, entity), and the long poll's wake-up signal.

    `entities` is the dict the data plane reads per request; it is never replaced.
    `notify` counts an event the runtime must see; `wait` returns once one happened after
    the last `report`.
    """

    def __init__(self) -> None:
        self.entities: dict[tuple[str, str], EntityDemand] = {}
        self._events = 0  # notify() calls so far
        self._reported = 0  # the value of _events at the last report
        self._signal: asyncio.Event | None = None
        self._closing = False

    def get(self, endpoint: str, entity: str) -> EntityDemand:
        """The record of (endpoint, entity), created at zero on first use."""
        key = (endpoint, entity)
        found = self.entities.get(key)
        if found is None:
            found = self.entities[key] = EntityDemand()
        return found

    def notify(self) -> None:
        """Something the runtime must react to happened: wake the long polls."""
        self._events += 1
        signal = self._signal
        if signal is not None:
            self._signal = None
            signal.set()

    def close(self) -> None:
        """The gateway stops: let every long poll answer now."""
        self._closing = True
        self.notify()

    async def wait(self, seconds: float) -> None:
        """Return once `notify` was called after the last report, or after `seconds`."""
        if seconds <= 0 or self._closing or self._events != self._reported:
            return
        signal = self._signal
        if signal is None:
            signal = self._signal = asyncio.Event()
        try:
            async with asyncio.timeout(seconds):
                await signal.wait()
        except TimeoutError:
            pass

    def forget_except(self, keep: Collection[tuple[str, str]]) -> None:
        """Drop the idle records of entities a new table no longer has."""
        entities = self.entities
        for key in [k for k, d in entities.items() if k not in keep and not d.busy]:
            del entities[key]

    def report(self, compiled: CompiledTable, ejected: Collection[str]) -> dict[str, Any]:
        """The JSON of the demand answer; then every peak restarts at inflight + held.

        {"now": unix, "table_version": v, "endpoints": {ep: {"hold_seconds": s,
        "entities": {key: {"inflight", "held", "peak", "last_request_at", "ejected"}}}}}
        Every entity of the table is there (zeros when it saw no request), and so is an
        entity no longer in the table while requests to it are unfinished. `ejected` lists
        the entity's replicas that picks skip for now (`eject.py`).
        """
        self._reported = self._events
        endpoints: dict[str, Any] = {}
        for name, compiled_ep in compiled.endpoints.items():
            ep = compiled_ep.table
            keys = dict.fromkeys([*ep.entities, *compiled_ep.entities])
            entry = {
                key: self._entity_json(name, key, ep.entities.get(key, ()), ejected) for key in keys
            }
            endpoints[name] = {"hold_seconds": ep.hold_seconds, "entities": entry}
        for (name, key), demand in self.entities.items():
            listed = endpoints.setdefault(name, {"hold_seconds": 0.0, "entities": {}})
            if key not in listed["entities"]:
                listed["entities"][key] = demand.to_json() | {"ejected": []}
        for demand in self.entities.values():
            demand.peak = demand.inflight + demand.held
        return {"now": time.time(), "table_version": compiled.version, "endpoints": endpoints}

    def _entity_json(
        self, name: str, key: str, replicas: Sequence[ReplicaTarget], ejected: Collection[str]
    ) -> dict[str, Any]:
        demand = self.entities.get((name, key))
        shown = demand.to_json() if demand is not None else EntityDemand().to_json()
        shown["ejected"] = sorted(r.id for r in replicas if r.id in ejected)
        return shown


def table_keys(compiled: CompiledTable) -> set[tuple[str, str]]:
    """Every (endpoint, entity) a compiled table lists or routes."""
    keys: set[tuple[str, str]] = set()
    for name, ep in compiled.endpoints.items():
        keys.update((name, key) for key in ep.table.entities)
        keys.update((name, key) for key in ep.entities)
    return keys


def parse_wait(raw: str | None) -> float | str:
    """The seconds of `?wait=` (0 when absent), or why it is not acceptable."""
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_WAIT_SECONDS:  # also refuses nan
        return f"wait must be a number of seconds from 0 to {MAX_WAIT_SECONDS:g}, not {raw!r}"
    return seconds
