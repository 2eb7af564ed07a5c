"""What the handlers of one apply act through: the project's boundaries, the ledger, the
plan's changes, every endpoint's progress, the clock, and the hooks that report events.

`ApplyContext` knows no action kind; the handlers (`handlers.py`) and the undo
(`rollback.py`) use it, the executor (`executor.py`) makes it.
"""

from __future__ import annotations

from collections.abc import Callable

from declare.apply.events import Event, Hooks
from declare.apply.ledger import Ledger
from declare.apply.progress import Progress, ProgressBook
from declare.diff import EndpointChange
from declare.errors import RolloutGuardError
from declare.model import ReplicaHandle
from declare.plan.actions import Plan
from declare.project import Project


class ApplyContext:
    """One apply's shared state: what it acts on and how far each endpoint got."""

    def __init__(self, project: Project, plan: Plan, ledger: Ledger, hooks: Hooks) -> None:
        self.project = project
        self.plan = plan
        self.ledger = ledger
        self.clock = project.clock
        self.changes: dict[str, EndpointChange] = {c.name: c for c in plan.changes}
        self.book = ProgressBook()
        self._hooks = hooks

    def emit(self, event: Event) -> None:
        self._hooks(event)

    def progress(self, name: str) -> Progress:
        return self.book.get(name)

    def fold(self, name: str, step: Callable[[Progress], Progress]) -> Progress:
        return self.book.fold(name, step)[1]

    def provider_of(self, name: str) -> str:
        change = self.changes.get(name)
        return change.provider if change is not None else self.project.config.default_provider

    def stop_handle(self, endpoint: str | None, handle: ReplicaHandle, grace: float) -> None:
        """Stop a replica and drop it from its endpoint's record."""
        self.project.provider(handle.provider).stop_replica(handle, grace_seconds=grace)
        if endpoint is not None and endpoint in self.ledger.state.endpoints:
            self.ledger.update(
                endpoint,
                lambda r: r.without_replica(handle.id),
            )

    def check_deadline(self, name: str) -> None:
        """RolloutGuardError once the endpoint's rollout ran past `deadline_seconds`."""
        change = self.changes.get(name)
        if change is None or change.after is None:
            return
        deadline = change.after.spec.rollout.deadline_seconds
        started = self.progress(name).started_at
        if deadline is None or started is None:
            return
        spent = self.clock.monotonic() - started
        if spent > deadline:
            raise RolloutGuardError(
                f"rollout deadline passed: {spent:.0f}s spent, deadline_seconds is {deadline:g}"
            )
