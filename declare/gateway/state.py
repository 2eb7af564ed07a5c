"""The gateway's shared state: the live routing table and the counters its handlers share.

`GatewayState` is the one object that the data plane, the management API and the admin
interface share. The routing table is held as one `Live` reference: a push builds a new
`Live` and replaces it in a single assignment, so a request that read `state.live` keeps the
table it started with. The in-flight counts per replica, the demand per entity (with its
round-robin cursor: `demand.py`), the ejected replicas (`eject.py`), metrics, limiter and the
buffer of captured requests (`capture/`) are
created once and never replaced, so a handler may hold them directly. Parts that must hear
of a push (the held requests, `hold.py`) register in `on_table`.

This module does no I/O and serves no HTTP, and it does not choose entities or replicas
(see `balance.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from yarl import URL

from declare.gateway.balance import CompiledTable, compile_table
from declare.gateway.capture.buffer import CaptureBuffer
from declare.gateway.demand import DemandBoard, table_keys
from declare.gateway.eject import Ejections
from declare.gateway.limits import RateLimiter
from declare.gateway.metrics import DEFAULT_CAPACITY, Metrics
from declare.gateway.table import RoutingTable

# How long a gateway with no table yet answers 503 (not 404) for an endpoint it does not know.
STARTUP_WINDOW_SECONDS = 10.0


@dataclass(frozen=True)
class Live:
    """Everything the data plane reads per request, swapped in as one reference."""

    compiled: CompiledTable
    urls: Mapping[str, URL]  # replica id -> its /invocations URL
    served: Mapping[str, str]  # replica id -> the served entity name it answers for

    @property
    def table(self) -> RoutingTable:
        return self.compiled.table


def build_live(table: RoutingTable) -> Live:
    urls: dict[str, URL] = {}
    served: dict[str, str] = {}
    for ep in table.endpoints.values():
        for key, replicas in ep.entities.items():
            for replica in replicas:
                urls[replica.id] = URL(replica.url.rstrip("/") + "/invocations")
                served[replica.id] = ep.served_name(key)
    return Live(compile_table(table), urls, served)


class GatewayState:
    """The live table, requests in flight per replica, demand per entity, ejections,
    metrics, limiter.

    Only `set_table` replaces `live`; the other attributes are the same objects for the
    process's lifetime. Not thread-safe: the gateway runs one event loop.
    """

    def __init__(
        self,
        metrics_capacity: int = DEFAULT_CAPACITY,
        eject_seconds: float = 2.0,
        capture: CaptureBuffer | None = None,
    ) -> None:
        self.live = build_live(RoutingTable.empty())
        self.inflight: dict[str, int] = {}  # replica id -> requests in flight
        self.demand = DemandBoard()  # (endpoint, entity) -> counts and round-robin cursor
        self.ejections = Ejections(eject_seconds)
        self.metrics = Metrics(metrics_capacity)
        self.limiter = RateLimiter()
        # captured requests waiting to be written (`is None`: an empty buffer is falsy)
        self.capture = CaptureBuffer() if capture is None else capture
        self.on_table: list[Callable[[CompiledTable], None]] = []  # told of every push
        # when no table was kept nor pushed yet: an endpoint it has no route for may be one
        # apply is about to push, so it answers 503 + Retry-After, not 404 (`awaiting_table`)
        self.born = time.monotonic()
        self.table_in = False

    def awaiting_table(self, window: float = STARTUP_WINDOW_SECONDS) -> bool:
        """True while no table came in and the process is younger than `window` seconds."""
        return not self.table_in and time.monotonic() - self.born < window

    @property
    def table(self) -> RoutingTable:
        return self.live.compiled.table

    def set_table(self, table: RoutingTable) -> None:
        """Swap in `table`; forget the idle demand records (and so the cursors) and the
        rate-limit counters it no longer routes, then tell `on_table`."""
        live = build_live(table)
        self.live = live  # the swap: one reference assignment
        self.table_in = True
        self.demand.forget_except(table_keys(live.compiled))
        self.limiter.forget_except(live.compiled.endpoints)
        for listener in self.on_table:
            listener(live.compiled)
