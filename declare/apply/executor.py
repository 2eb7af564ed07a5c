"""Carry out a plan: walk its DAG, run each action's handler, fold each outcome into the
endpoint's progress, and at the end finish or undo each endpoint.

A failing endpoint never takes the old version down: traffic moves only in `set-routes`
(and `shift-traffic` steps), which run after every new replica answered a real prediction;
if anything of the endpoint fails, its other actions are skipped, `rollback.undo` reverses
what it did (traffic back first, then the replicas it started are stopped), and the
endpoint records UPDATE_FAILED with the reason. Other endpoints go on. Every change to what
is recorded goes through the ledger (written after each action); a write that fails fails
its action like any other error, and the outcome says the state file was not updated.

A BaseException that is not an Exception (KeyboardInterrupt, SystemExit) is a crash: the
walk stops at once and it propagates, with no undo, leaving the state as last written (the
next plan reads it and converges). Reading manifests, diffing and planning happen before.
"""

from __future__ import annotations

from collections.abc import Hashable

from declare.apply import rollback
from declare.apply.context import ApplyContext
from declare.apply.events import (
    ActionFailed,
    ActionFinished,
    ActionStarted,
    ApplyResult,
    EndpointOutcome,
    Hooks,
    Serving,
    StatusNotShown,
    no_hooks,
)
from declare.apply.handlers import HANDLERS
from declare.apply.ledger import Ledger
from declare.dag import Outcome, WalkResult, walk
from declare.diff import Change, EndpointChange
from declare.errors import StateError
from declare.plan.actions import Action, Plan
from declare.project import Project
from declare.state.document import IN_PROGRESS, NOT_UPDATING, State


class Executor:
    """One apply of one plan (see the module docstring); `run()` once."""

    def __init__(
        self,
        project: Project,
        plan: Plan,
        state: State,
        hooks: Hooks = no_hooks,
        parallelism: int = 10,
        record_status: bool = True,
    ) -> None:
        # Endpoints this apply creates: a gateway that serves them already (the state was
        # lost) keeps serving them as it does until their switch.
        creating = frozenset(
            c.name
            for c in plan.changes
            if c.after is not None and (c.before is None or c.before.spec is None)
        )
        self.ledger = Ledger(
            project.backend, state, project.gateway, project.config.default_provider, creating
        )
        self.ctx = ApplyContext(project, plan, self.ledger, hooks)
        self.plan = plan
        self.parallelism = parallelism
        # apply records each endpoint's config status (IN_PROGRESS, the config version,
        # UPDATE_FAILED); the runtime, which changes no config, records none of it.
        self.record_status = record_status
        self._actions = {a.id: a for a in plan.actions}

    @property
    def state(self) -> State:
        """The state as last written."""
        return self.ledger.state

    def run(self) -> ApplyResult:
        clock = self.ctx.clock
        started = clock.monotonic()
        order = {a.id: i for i, a in enumerate(self.plan.actions)}
        walked = walk(
            self.plan.graph(),
            lambda node: self._run_action(self._actions[str(node)]),
            parallelism=self.parallelism,
            skip=self._skipped,
            priority=lambda n: order[str(n)],
        )
        global_errors = tuple(
            f"{node}: {exc}"
            for node, exc in walked.errors.items()
            if self._actions[str(node)].endpoint is None
        )
        outcomes = tuple(
            self._conclude(change, walked)
            for change in self.plan.changes
            if change.kind is not Change.NOOP
        )
        return ApplyResult(outcomes, global_errors, clock.monotonic() - started)

    # -- one action ---------------------------------------------------------------------

    def _skipped(self, node: Hashable) -> bool:
        endpoint = self._actions[str(node)].endpoint
        return endpoint is not None and self.ctx.progress(endpoint).failed

    def _run_action(self, action: Action) -> None:
        ctx, name = self.ctx, action.endpoint
        t0 = ctx.clock.monotonic()
        ctx.emit(ActionStarted(action, ctx.clock.time()))
        try:
            if name is not None:
                before, _ = ctx.book.fold(name, lambda p: p.begun(action, t0))
                if before.started_at is None:
                    self._begin(name)
                ctx.check_deadline(name)
            HANDLERS[action.kind](ctx, action)
        except Exception as exc:
            error = str(exc)
            if name is not None:
                ctx.fold(name, lambda p: p.with_outcome(action, error))
            ctx.emit(ActionFailed(action, ctx.clock.monotonic() - t0, error))
            raise
        if name is not None:
            ctx.fold(name, lambda p: p.with_outcome(action))
        ctx.emit(ActionFinished(action, ctx.clock.monotonic() - t0))

    # -- one endpoint -------------------------------------------------------------------

    def _begin(self, name: str) -> None:
        """The endpoint's first action: the management API shows IN_PROGRESS."""
        change = self.ctx.changes[name]
        if _refresh_only(change) or not self.record_status:
            return
        pending = change.after.spec if change.after else None
        self.ledger.update(
            name, lambda r: r.with_status(IN_PROGRESS, pending=pending), change.provider
        )
        self._show_status()

    def _conclude(self, change: EndpointChange, walked: WalkResult) -> EndpointOutcome:
        name = change.name
        mine = [a for a in self.plan.actions if a.endpoint == name]
        bad = [a for a in mine if walked.outcomes.get(a.id) is not Outcome.OK]
        if bad and not self.ctx.progress(name).failed:
            failed = next((a for a in bad if walked.outcomes.get(a.id) is Outcome.FAILED), bad[0])
            why = walked.errors.get(failed.id)
            reason = str(why) if why else self._blocked_reason(failed, walked)
            self.ctx.fold(name, lambda p: p.failing(reason))
        if self.ctx.progress(name).failed:
            undone = rollback.undo(self.ctx, name, self.record_status)
            return EndpointOutcome(
                name, change.kind, False, undone.message, undone.serving, undone.state_error
            )
        try:
            self._finish(change)
        except StateError as exc:  # it serves the new config; the record of that failed
            message = f"applied, but its last state write failed: {exc}"
            return EndpointOutcome(name, change.kind, False, message, Serving.NEW, str(exc))
        return EndpointOutcome(name, change.kind, True)

    def _finish(self, change: EndpointChange) -> None:
        if _refresh_only(change):
            return
        if not self.record_status:
            self._show_status()
            return
        if change.kind is Change.DELETE:
            self.ledger.remove(change.name)
        else:
            self.ledger.update(
                change.name,
                lambda r: r.with_status(NOT_UPDATING).bump_version(),
            )
        self._show_status()

    def _show_status(self) -> None:
        error = self.ledger.show_status()
        if error is not None:
            self.ctx.emit(StatusNotShown(error))

    def _blocked_reason(self, failed: Action, walked: WalkResult) -> str:
        for node, exc in walked.errors.items():
            if self._actions[str(node)].endpoint is None:
                return f"not applied because {node} failed: {exc}"
        return f"{failed.id} was not run"


def _refresh_only(change: EndpointChange) -> bool:
    """A refresh-only update: it forgets dead replicas and leaves the config and status."""
    return change.kind is Change.UPDATE and change.after is None
