"""One endpoint's apply so far, as an immutable value advanced by each outcome (kopf's
`progression`): which actions began and finished, the first error, the routing it had
before traffic first moved, and the replicas its starts made (by slot).

Pure: every method returns a new value. `ProgressBook` keeps the current value of each
endpoint for one apply and replaces it atomically.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from declare.model import ReplicaHandle
from declare.plan.actions import Action, ActionKind
from declare.state.document import EndpointRecord

# Once these ran, the old replicas can no longer take traffic back: failures roll forward.
POINT_OF_NO_RETURN = (ActionKind.DRAIN, ActionKind.STOP_REPLICA)


@dataclass(frozen=True)
class Progress:
    started_at: float | None = None  # monotonic seconds when its first action began
    ran: tuple[Action, ...] = ()  # actions begun (finished or not)
    done: tuple[Action, ...] = ()  # actions finished, in the order they finished
    error: str | None = None  # the first failure
    snapshot: EndpointRecord | None = None  # the record before traffic first moved
    handles: Mapping[str, ReplicaHandle] = field(default_factory=dict)  # slot -> started

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def past_return(self) -> bool:
        """True once draining or stopping the replicas it replaces has begun."""
        return any(a.kind in POINT_OF_NO_RETURN for a in self.ran)

    def begun(self, action: Action, now: float) -> Progress:
        return replace(
            self,
            started_at=self.started_at if self.started_at is not None else now,
            ran=(*self.ran, action),
        )

    def with_outcome(self, action: Action, error: str | None = None) -> Progress:
        """`action` finished (error None) or failed with `error` (the first error is kept)."""
        if error is None:
            return replace(self, done=(*self.done, action))
        return self.failing(error)

    def failing(self, error: str) -> Progress:
        return self if self.error is not None else replace(self, error=error)

    def with_handle(self, slot: str, handle: ReplicaHandle) -> Progress:
        return replace(self, handles={**self.handles, slot: handle})

    def with_snapshot(self, record: EndpointRecord) -> Progress:
        """The routing before traffic first moved (later moves keep the first)."""
        return self if self.snapshot is not None else replace(self, snapshot=record)


class ProgressBook:
    """The current `Progress` of each endpoint during one apply (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_endpoint: dict[str, Progress] = {}

    def get(self, name: str) -> Progress:
        with self._lock:
            return self._by_endpoint.get(name, Progress())

    def fold(self, name: str, step: Callable[[Progress], Progress]) -> tuple[Progress, Progress]:
        """Replace the endpoint's progress by `step(progress)`; (before, after)."""
        with self._lock:
            before = self._by_endpoint.get(name, Progress())
            after = step(before)
            self._by_endpoint[name] = after
            return before, after
