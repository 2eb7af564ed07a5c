"""The one writer of the recorded state and of the gateway's routing table during an apply.

Every change an action makes to what is recorded goes through `Ledger`: it writes the state
after each change (the backend owns serial and lineage) and pushes the routing table, always
derived from the state (`declare.routing`), so the two never disagree for long:

    update(name, fn)      record a change of one endpoint
    switch(fn, what)      move traffic: push the table of the changed state first, then
                          record it (a gateway that refuses leaves the state as it was)
    push(required, what)  push the table of the current state
    show_status()         push for the management API's status only; a failure is returned

A write that fails (a full disk, EIO, a lost database) raises the backend's StateError and
leaves the stored state as it was (the backends write atomically); `write_error` keeps its
message until a write succeeds. Only after a switch the gateway took does the ledger keep the
unwritten state as its own, since the gateway routes by it and every later push derives
from it: a push of the older state would move traffic the switch moved. The next write,
once one succeeds, records it.

An endpoint named in `held` (being created by this apply) that the state routes nowhere yet
while the gateway serves it keeps the gateway's entry (`declare.routing.keeping_served`): a
state lost under a running gateway never makes a push route it to nothing.

Not a planner: it is told what changed, by the handlers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from declare.errors import DeclareError, GatewayError
from declare.ports import GatewayControl
from declare.routing import keeping_served, routing_table
from declare.state.backend import StateWriter
from declare.state.document import EndpointRecord, RecordedGateway, RecordedRuntime, State


class Ledger:
    """The state as last written, and the only path by which it changes during an apply."""

    def __init__(
        self,
        backend: StateWriter,
        state: State,
        gateway: GatewayControl,
        default_provider: str,
        held: frozenset[str] = frozenset(),
    ) -> None:
        self._backend = backend
        self._held = held
        self._state = state
        self._gateway = gateway
        self._default_provider = default_provider
        self._lock = threading.RLock()
        self.write_error: str | None = None  # the last write's failure, until one succeeds

    @property
    def state(self) -> State:
        """The state as last written (or, after a switch whose write failed, as routed)."""
        return self._state

    def commit(self, new: State) -> None:
        with self._lock:
            try:
                written = self._backend.write(new.to_json())
            except DeclareError as exc:
                self.write_error = str(exc)
                raise
            self.write_error = None
            self._state = replace(new, serial=written["serial"], lineage=written["lineage"])

    def update(
        self,
        name: str,
        fn: Callable[[EndpointRecord], EndpointRecord],
        provider: str | None = None,
    ) -> None:
        """Record `fn(record)` for endpoint `name` (a new record when it has none yet)."""
        with self._lock:
            record = self._state.endpoint(name, provider or self._default_provider)
            self.commit(self._state.with_endpoint(fn(record)))

    def remove(self, name: str) -> None:
        with self._lock:
            self.commit(self._state.without_endpoint(name))

    def record_gateway(self, gateway: RecordedGateway | None) -> None:
        with self._lock:
            self.commit(replace(self._state, gateway=gateway))

    def record_runtime(self, runtime: RecordedRuntime | None) -> None:
        with self._lock:
            self.commit(replace(self._state, runtime=runtime))

    def switch(self, change: Callable[[State], State], what: str) -> None:
        """Push the table of `change(state)`; only once the gateway took it, record it (if
        that write fails, the ledger keeps it all the same, unwritten, and raises)."""
        with self._lock:
            candidate = change(self._state)
            self._push(candidate, required=True, what=what)
            try:
                self.commit(candidate)
            except DeclareError:
                self._state = candidate
                raise

    def push(self, required: bool, what: str = "routes cannot be switched") -> None:
        with self._lock:
            self._push(self._state, required, what)

    def show_status(self) -> str | None:
        """Push the table so the management API shows the new status; the error, if any."""
        try:
            self.push(required=False)
        except DeclareError as exc:
            return str(exc)
        return None

    def _push(self, state: State, required: bool, what: str) -> None:
        admin = self._gateway.admin()
        if admin is None:
            if required:
                raise GatewayError(f"the gateway is not running, so {what}")
            return
        with admin:
            table = routing_table(state)
            if self._held:
                table = keeping_served(table, admin.get_table(), self._held)
            admin.put_table(table)
