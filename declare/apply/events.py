"""What an apply reports while it runs, and what it comes to: immutable values.

The executor calls its hooks with one event at a time (Terraform's hooks: `apply -json` is
just another view of them, `declare.views.apply`). Events say which action, when and for how
long; the result says, per endpoint, whether its change took effect and why not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from declare.diff import Change
from declare.model import Evidence, Figures
from declare.plan.actions import Action


@dataclass(frozen=True)
class ActionStarted:
    action: Action
    at: float  # unix seconds


@dataclass(frozen=True)
class ActionFinished:
    action: Action
    elapsed: float


@dataclass(frozen=True)
class ActionFailed:
    action: Action
    elapsed: float
    error: str


@dataclass(frozen=True)
class GuardsPassed:
    """A bake ended with every guard holding, judged on these figures (by entity)."""

    action: Action
    step: int
    of: int
    figures: Mapping[str, Figures] = field(default_factory=dict)


@dataclass(frozen=True)
class EvidencePassed:
    """A replay or shadow step ended with every bound holding, on this evidence (by
    candidate entity)."""

    action: Action
    figures: Mapping[str, Evidence] = field(default_factory=dict)


@dataclass(frozen=True)
class EvidenceSkipped:
    """A replay the plan skipped (too few captured requests, `when_insufficient: skip`)."""

    action: Action
    reason: str


@dataclass(frozen=True)
class DrainTimedOut:
    action: Action
    seconds: float


@dataclass(frozen=True)
class GatewayStoppedFirst:
    """The old gateway could not hand its port over (started without SO_REUSEPORT by an
    older declare): it was stopped before the new one started."""

    action: Action


@dataclass(frozen=True)
class UndoStep:
    """One finished action of a failed endpoint being reversed (`what` was done)."""

    action: Action
    what: str


@dataclass(frozen=True)
class UndoFailed:
    action: Action
    error: str


@dataclass(frozen=True)
class StatusNotShown:
    """The gateway did not take a status-only table push (no outcome depends on it)."""

    error: str


Event = (
    ActionStarted
    | ActionFinished
    | ActionFailed
    | GuardsPassed
    | EvidencePassed
    | EvidenceSkipped
    | DrainTimedOut
    | GatewayStoppedFirst
    | UndoStep
    | UndoFailed
    | StatusNotShown
)


class Hooks(Protocol):
    def __call__(self, event: Event) -> None: ...


def no_hooks(event: Event) -> None:
    """Hooks that ignore every event."""


class Serving(Enum):
    """What a failed endpoint's traffic goes to once its undo is over."""

    BEFORE = "before"  # what served before the apply (traffic never moved, or went back)
    NEW = "new"  # the new config: the replicas it replaces had begun to stop
    UNKNOWN = "unknown"  # traffic could not be sent back (see the undo errors)


@dataclass(frozen=True)
class EndpointOutcome:
    name: str
    change: Change
    ok: bool
    error: str = ""
    serving: Serving = Serving.BEFORE  # when not ok: where its traffic goes now
    state_error: str = ""  # the last state write of the apply that failed, if any


@dataclass(frozen=True)
class ApplyResult:
    endpoints: tuple[EndpointOutcome, ...] = ()
    global_errors: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.global_errors and all(e.ok for e in self.endpoints)

    def counts(self) -> dict[str, int]:
        """Endpoints whose change took effect, as Terraform counts them."""
        out = {"add": 0, "change": 0, "destroy": 0}
        words = {Change.CREATE: "add", Change.UPDATE: "change", Change.DELETE: "destroy"}
        for outcome in self.endpoints:
            if outcome.ok and outcome.change in words:
                out[words[outcome.change]] += 1
        return out
