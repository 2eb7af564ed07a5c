"""The gateway's shared state: the live routing table and the counters its handlers share.

`GatewayState` is the one object that the data plane, the management API and the admin
interface share. The routing table is held as one `Live` reference: a push builds a new
`Live` and replaces it in a single assignment, so a request that read `state.live` keeps the
table it started with. The in-flight counts, round-robin cursors, metrics and limiter are
created once and never replaced, so a handler may hold them directly.

This module does no I/O and serves no HTTP, and it does not choose entities or replicas
(see `balance.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from declare.gateway.balance import CompiledTable, compile_table
from declare.gateway.limits import RateLimiter
from declare.gateway.metrics import DEFAULT_CAPACITY, Metrics
from declare.gateway.table import RoutingTable


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
    """The live table, requests in flight per replica, round-robin cursors, metrics, limiter.

    Only `set_table` replaces `live`; the other attributes are the same objects for the
    process's lifetime. Not thread-safe: the gateway runs one event loop.
    """

    def __init__(self, metrics_capacity: int = DEFAULT_CAPACITY) -> None:
        self.live = build_live(RoutingTable.empty())
        self.inflight: dict[str, int] = {}  # replica id -> requests in flight
        self.cursors: dict[tuple[str, str], int] = {}  # (endpoint, entity) -> round-robin
        self.metrics = Metrics(metrics_capacity)
        self.limiter = RateLimiter()

    @property
    def table(self) -> RoutingTable:
        return self.live.compiled.table

    def set_table(self, table: RoutingTable) -> None:
        """Swap in `table`; forget the cursors and rate-limit counters it no longer routes."""
        live = build_live(table)
        self.live = live  # the swap: one reference assignment
        keep = {
            (ep, ent)
            for ep, compiled in live.compiled.endpoints.items()
            for ent in compiled.entities
        }
        cursors = self.cursors
        for key in [k for k in cursors if k not in keep]:
            del cursors[key]
        self.limiter.forget_except(live.compiled.endpoints)
