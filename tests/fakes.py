"""In-memory boundaries for fast tests of the engine and the executor: a gateway, a runtime,
a readiness probe and a clock (`declare.ports`), beside the fake provider (providers/fake.py).

Like the fake provider's replicas, a fake gateway lives in a "world" shared by every
`FakeGateway` of one state folder in this process, as the real gateway process outlives one
`declare` run: a later plan sees what an earlier apply (or a crashed one) left running.

Knobs for tests (on `FakeGateway.world`):
    refuse_puts   how many of the next table pushes fail with GatewayError
    stuck         replica ids whose drain never finishes
    figures       (endpoint, target key, table) -> metrics of that target, or None
    on_put        called with each table the gateway takes (e.g. to stop it mid-apply)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from declare.errors import GatewayError, ReplicaFailedError
from declare.gateway.table import RoutingTable
from declare.model import ReplicaHandle, ResolvedModel
from declare.ports import GatewaySettings, RuntimeStatus
from declare.provider import Liveness, Provider

Figures = Callable[[str, str, RoutingTable], dict[str, Any] | None]


@dataclass
class GatewayWorld:
    """What "runs" as the gateway of one state folder."""

    running: bool = False
    settings: GatewaySettings | None = None
    table: RoutingTable = field(default_factory=RoutingTable.empty)
    tables: list[RoutingTable] = field(default_factory=list)  # every table taken, in order
    starts: int = 0
    restarts: int = 0  # handovers: a new gateway took over from a running one
    refuse_puts: int = 0
    stuck: set[str] = field(default_factory=set)
    figures: Figures | None = None
    demand: Figures | None = None  # (endpoint, key, table) -> the demand answer of that target
    on_put: Callable[[RoutingTable], None] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)


_WORLDS: dict[Path, GatewayWorld] = {}


def reset_gateways() -> None:
    _WORLDS.clear()


class FakeAdmin:
    """The admin API of a running fake gateway."""

    def __init__(self, world: GatewayWorld) -> None:
        self.world = world

    def put_table(self, table: RoutingTable) -> int:
        w = self.world
        with w.lock:
            if not w.running:
                raise GatewayError("the fake gateway is not running")
            if w.refuse_puts > 0:
                w.refuse_puts -= 1
                raise GatewayError("the fake gateway refused the table (refuse_puts)")
            w.table = table
            w.tables.append(table)
            hook = w.on_put
        if hook is not None:
            hook(table)
        return table.version

    def get_table(self) -> RoutingTable:
        with self.world.lock:
            return self.world.table

    def drain(self, replica_ids: Sequence[str], timeout_seconds: float) -> bool:
        return not (set(replica_ids) & self.world.stuck)

    def demand(self, wait: float = 0.0) -> dict[str, Any]:
        w = self.world
        with w.lock:
            table, demand = w.table, w.demand
        endpoints: dict[str, Any] = {}
        for name, ep in table.endpoints.items():
            entities = {}
            for key in ep.entities:
                got = demand(name, key, table) if demand is not None else None
                entities[key] = got or {"inflight": 0, "held": 0, "peak": 0}
            endpoints[name] = {"entities": entities}
        return {"now": 0.0, "endpoints": endpoints}

    def metrics(self, since: float | None = None) -> dict[str, Any]:
        w = self.world
        with w.lock:
            table, figures = w.table, w.figures
        endpoints: dict[str, Any] = {}
        for name, ep in table.endpoints.items():
            entities = {}
            for key in ep.entities:
                got = figures(name, key, table) if figures is not None else None
                if got is not None:
                    entities[key] = got
            endpoints[name] = {"entities": entities}
        return {"since": since, "endpoints": endpoints}

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


class FakeGateway:
    """`declare.ports.GatewayControl` in memory."""

    def __init__(self, state_dir: Path) -> None:
        self.world = _WORLDS.setdefault(state_dir.absolute(), GatewayWorld())

    def admin(self) -> FakeAdmin | None:
        with self.world.lock:
            return FakeAdmin(self.world) if self.world.running else None

    def settings_hash(self) -> str | None:
        with self.world.lock:
            w = self.world
            return w.settings.hash if w.running and w.settings is not None else None

    def start(self, settings: GatewaySettings) -> None:
        with self.world.lock:
            if self.world.running:
                raise GatewayError("the project's fake gateway already runs")
            self.world.running = True
            self.world.settings = settings
            self.world.table = RoutingTable.empty()
            self.world.starts += 1

    def restart(self, settings: GatewaySettings) -> bool:
        """Hand over: the table stays, the settings and the count of starts change."""
        with self.world.lock:
            self.world.running = True
            self.world.settings = settings
            self.world.starts += 1
            self.world.restarts += 1
            return True

    def stop(self) -> None:
        with self.world.lock:
            self.world.running = False
            self.world.table = RoutingTable.empty()


@dataclass
class FakeRuntime:
    """`declare.ports.RuntimeControl` in memory: it only records whether it "runs"."""

    running: RuntimeStatus | None = None
    starts: int = 0

    def status(self) -> RuntimeStatus | None:
        return self.running

    def start(self, settings_hash: str) -> None:
        self.starts += 1
        self.running = RuntimeStatus(1, 2, 0.0, settings_hash)

    def stop(self) -> None:
        self.running = None


class FakeProbe:
    """Readiness without HTTP: a replica is ready when its provider says it is alive, unless
    its model is in `fail` (then it answers its input example with an error)."""

    def __init__(self) -> None:
        self.fail: set[str] = set()
        self.probed: list[str] = []

    def await_ready(
        self, provider: Provider, handle: ReplicaHandle, model: ResolvedModel, timeout: float
    ) -> float:
        self.probed.append(handle.id)
        status = provider.status(handle)
        if status.liveness is not Liveness.ALIVE:
            raise ReplicaFailedError(f"replica {handle.id} exited before it was ready")
        if model.pinned_uri in self.fail:
            raise ReplicaFailedError(
                f"replica {handle.id} ({handle.entity}) answers its input example with an "
                "error: HTTP 400: the model failed"
            )
        return 0.0


class FakeClock:
    """Time that passes only when someone sleeps (bakes and deadlines run in no time)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        return self.monotonic()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(seconds, 0.001)
