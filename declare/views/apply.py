"""Two views of an apply as it runs: human text and a stream of JSON lines.

Both take the executor's events (they are its hooks) and the plan before and the result
after, and render them; neither decides anything.

- `HumanApplyView`: the lines of a `terraform apply` (`<action>: <summary>...`, `done after
  1.2s`, undo steps, the summary, invocation URLs). On a terminal the actions in progress
  stay on a live line at the bottom with their elapsed time (rich; `NO_COLOR` is honoured);
  without one, plain lines only.
- `JsonApplyView`: one JSON object per line (Terraform's `apply -json` manner): a `version`
  line, the `plan` summary, `action_start` / `action_finish` / `action_error` with elapsed
  seconds, undo and guard events, and the `outcome`. Each line carries `@level`,
  `@message` and `@timestamp`; `type` says which it is. Shape: schemas/apply-events.schema.json.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from declare import __version__
from declare.apply.events import (
    ActionFailed,
    ActionFinished,
    ActionStarted,
    ApplyResult,
    DrainTimedOut,
    EndpointOutcome,
    Event,
    EvidencePassed,
    EvidenceSkipped,
    GatewayStoppedFirst,
    GuardsPassed,
    Serving,
    StatusNotShown,
    UndoFailed,
    UndoStep,
)
from declare.diff import Change
from declare.plan.actions import Action, Plan
from declare.views.plan import render_human

EVENTS_FORMAT_VERSION = "1.0"


class ApplyView(Protocol):
    def plan(self, plan: Plan, note: str | None = None) -> None:
        """The plan about to be applied (`note`: e.g. which saved plan it is)."""

    def __call__(self, event: Event) -> None:
        """One event of the executor."""

    def outcome(
        self, result: ApplyResult, destroy: bool, elapsed: float, urls: Mapping[str, str]
    ) -> None:
        """What the apply came to, and where its endpoints answer."""

    def no_changes(self, urls: Mapping[str, str]) -> None:
        """The plan had nothing to do."""

    def close(self) -> None: ...


def event_text(event: Event) -> str:
    """The human line of one event."""
    match event:
        case ActionStarted(action=a):
            return f"{a.id}: {a.summary}..."
        case ActionFinished(action=a, elapsed=t):
            return f"{a.id}: done after {t:.1f}s"
        case ActionFailed(action=a, elapsed=t):
            return f"{a.id}: failed after {t:.1f}s"
        case GuardsPassed(action=a, step=step, of=of, figures=figures):
            seen = "; ".join(f"{key}: {f.describe()}" for key, f in figures.items())
            return f"{a.id}: guards pass at step {step}/{of} ({seen or 'no requests'})"
        case EvidencePassed(action=a, figures=evidence):
            seen = "; ".join(f"{key}: {e.describe()}" for key, e in evidence.items())
            return f"{a.id}: {a.kind.value} passes ({seen or 'nothing compared'})"
        case EvidenceSkipped(action=a, reason=reason):
            return f"{a.id}: skipped: {reason}"
        case DrainTimedOut(action=a, seconds=s):
            return f"{a.id}: requests still in flight after {s:.0f} s; stopping anyway"
        case GatewayStoppedFirst(action=a):
            return (
                f"{a.id}: the old gateway cannot hand its port over (started without "
                "SO_REUSEPORT by an older declare): it was stopped first, so requests "
                "meanwhile were refused"
            )
        case UndoStep(action=a, what=what):
            return f"{a.id}: undo: {what}"
        case UndoFailed(action=a, error=error):
            return f"{a.id}: undo failed: {error}"
        case StatusNotShown(error=error):
            return f"note: the gateway did not take the new status: {error}"


def failure_lines(result: ApplyResult) -> list[str]:
    out = [f"Error: {err}" for err in result.global_errors]
    for o in result.endpoints:
        if not o.ok:
            out.append(f"Error: endpoint.{o.name}: {o.error}")
            if o.change is not Change.DELETE:
                out.append(f"  endpoint {o.name}: {_serving_text(o)}")
            if o.state_error:
                out.append(
                    "  the state file still holds its last good version: the apply's last "
                    "state write failed; once that is fixed, plan shows what is left to do."
                )
    return out


def _serving_text(o: EndpointOutcome) -> str:
    """Where a failed endpoint's traffic goes, as its undo left it."""
    recorded = "could not record UPDATE_FAILED" if o.state_error else "records UPDATE_FAILED"
    match o.serving:
        case Serving.BEFORE if o.change is Change.CREATE:
            return f"{recorded}; nothing started for it is left serving."
        case Serving.BEFORE:
            return f"{recorded}; what ran before keeps serving."
        case Serving.NEW:
            return f"{recorded}; the new config serves."
        case Serving.UNKNOWN:
            return (
                f"{recorded}; traffic could not be sent back to what ran before (the undo "
                "errors above say why, and which replicas are left running)."
            )


def outcome_line(result: ApplyResult, destroy: bool, elapsed: float) -> str:
    word = "Destroy" if destroy else "Apply"
    c = result.counts()
    counted = f"{c['add']} added, {c['change']} changed, {c['destroy']} destroyed"
    if result.ok:
        return f"{word} complete! Endpoints: {counted}. ({elapsed:.1f}s)"
    failed = sum(not o.ok for o in result.endpoints)
    return f"{word} failed. Endpoints: {counted}; {failed} failed."


def url_lines(urls: Mapping[str, str]) -> list[str]:
    if not urls:
        return []
    return ["", "Invocation URLs:", *(f"  {name} = {url}" for name, url in sorted(urls.items()))]


class _Running:
    """The actions in progress, rendered (by rich, several times a second) with their age."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, tuple[Action, float]] = {}

    def add(self, action: Action) -> None:
        with self._lock:
            self._since[action.id] = (action, time.monotonic())

    def remove(self, action: Action) -> None:
        with self._lock:
            self._since.pop(action.id, None)

    def __rich__(self) -> Group:
        now = time.monotonic()
        with self._lock:
            items = list(self._since.values())
        return Group(
            *(Text(f"  ... {a.id}: {a.summary} ({now - t0:.0f}s)", style="dim") for a, t0 in items)
        )


class HumanApplyView:
    """Human text; a live line of what is in progress when `out` is a terminal."""

    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, live: bool | None = None
    ) -> None:
        self._out = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
        self._err = err or sys.stderr
        use_live = self._out.is_terminal if live is None else live
        self._running = _Running()
        self._live = (
            Live(self._running, console=self._out, refresh_per_second=4, transient=True)
            if use_live
            else None
        )
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        with self._lock:
            self._out.print(text, markup=False, emoji=False)

    def plan(self, plan: Plan, note: str | None = None) -> None:
        self._print(note if note is not None else render_human(plan))

    def __call__(self, event: Event) -> None:
        if isinstance(event, ActionStarted):
            self._running.add(event.action)
            if self._live is not None and not self._live.is_started:
                self._live.start()
        elif isinstance(event, ActionFinished | ActionFailed):
            self._running.remove(event.action)
        self._print(event_text(event))

    def outcome(
        self, result: ApplyResult, destroy: bool, elapsed: float, urls: Mapping[str, str]
    ) -> None:
        self.close()
        self._print("")
        for line in failure_lines(result):
            print(line, file=self._err)
        if result.ok:
            self._print(outcome_line(result, destroy, elapsed))
            for line in url_lines(urls):
                self._print(line)
        else:
            print(outcome_line(result, destroy, elapsed), file=self._err)

    def no_changes(self, urls: Mapping[str, str]) -> None:
        for line in url_lines(urls):
            self._print(line)

    def close(self) -> None:
        if self._live is not None and self._live.is_started:
            self._live.stop()


def _action_ref(a: Action) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind.value, "endpoint": a.endpoint}


def event_json(event: Event) -> dict[str, Any]:
    """The `type` and fields of one event's JSON line (without the @ keys)."""
    match event:
        case ActionStarted(action=a):
            return {"type": "action_start", "action": {**_action_ref(a), "summary": a.summary}}
        case ActionFinished(action=a, elapsed=t):
            return {"type": "action_finish", "action": _action_ref(a), "elapsed_seconds": t}
        case ActionFailed(action=a, elapsed=t, error=error):
            return {
                "type": "action_error",
                "action": _action_ref(a),
                "elapsed_seconds": t,
                "error": error,
            }
        case GuardsPassed(action=a, step=step, of=of, figures=figures):
            return {
                "type": "guards_pass",
                "action": _action_ref(a),
                "step": step,
                "of": of,
                "figures": {
                    k: {"requests": f.requests, "errors": f.errors, "p99_ms": f.p99_ms}
                    for k, f in figures.items()
                },
            }
        case EvidencePassed(action=a, figures=evidence):
            return {
                "type": "evidence_pass",
                "action": _action_ref(a),
                "figures": {k: e.to_json() for k, e in evidence.items()},
            }
        case EvidenceSkipped(action=a, reason=reason):
            return {"type": "evidence_skipped", "action": _action_ref(a), "reason": reason}
        case DrainTimedOut(action=a, seconds=s):
            return {"type": "drain_timeout", "action": _action_ref(a), "timeout_seconds": s}
        case GatewayStoppedFirst(action=a):
            return {"type": "gateway_stopped_first", "action": _action_ref(a)}
        case UndoStep(action=a, what=what):
            return {"type": "undo", "action": _action_ref(a), "what": what}
        case UndoFailed(action=a, error=error):
            return {"type": "undo_error", "action": _action_ref(a), "error": error}
        case StatusNotShown(error=error):
            return {"type": "status_not_shown", "error": error}


_LEVELS = {
    "action_error": "error",
    "undo_error": "error",
    "drain_timeout": "warn",
    "evidence_skipped": "warn",
    "status_not_shown": "warn",
    "gateway_stopped_first": "warn",
}


class JsonApplyView:
    """JSON lines on `out`, one per event, flushed as they happen."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._lock = threading.Lock()
        self._line("info", "declare " + __version__, {"type": "version", "declare": __version__})

    def _line(self, level: str, message: str, body: Mapping[str, Any]) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        line = {
            "@level": level,
            "@message": message,
            "@timestamp": stamp,
            "format_version": EVENTS_FORMAT_VERSION,
            **body,
        }
        with self._lock:
            self._out.write(json.dumps(line) + "\n")
            self._out.flush()

    def plan(self, plan: Plan, note: str | None = None) -> None:
        counts = plan.counts()
        self._line(
            "info",
            f"Plan: {counts['add']} to add, {counts['change']} to change, "
            f"{counts['destroy']} to destroy; {len(plan.actions)} actions",
            {
                "type": "plan",
                "destroy": plan.destroy,
                "changes": {**counts, "actions": len(plan.actions)},
                "actions": [{**_action_ref(a), "summary": a.summary} for a in plan.actions],
                "note": note,
            },
        )

    def __call__(self, event: Event) -> None:
        body = event_json(event)
        self._line(_LEVELS.get(str(body["type"]), "info"), event_text(event), body)

    def outcome(
        self, result: ApplyResult, destroy: bool, elapsed: float, urls: Mapping[str, str]
    ) -> None:
        self._line(
            "info" if result.ok else "error",
            outcome_line(result, destroy, elapsed),
            {
                "type": "outcome",
                "ok": result.ok,
                "operation": "destroy" if destroy else "apply",
                "counts": result.counts(),
                "endpoints": [
                    {
                        "name": o.name,
                        "change": o.change.value,
                        "ok": o.ok,
                        "error": o.error,
                        "serving": None if o.ok else o.serving.value,
                        "state_error": o.state_error or None,
                    }
                    for o in result.endpoints
                ],
                "errors": list(result.global_errors),
                "elapsed_seconds": elapsed,
                "invocation_urls": dict(sorted(urls.items())),
            },
        )

    def no_changes(self, urls: Mapping[str, str]) -> None:
        self.outcome(ApplyResult(), False, 0.0, urls)

    def close(self) -> None:
        self._out.flush()
