"""Undo a failed endpoint's finished actions, newest first, and record UPDATE_FAILED.

What is undone, by kind: a started replica is stopped; a traffic switch or shift sends all
traffic back to what served before (the record snapshotted before traffic first moved).
Nothing else needs undoing: a build is shared and harmless, readiness and bakes only
looked, and a drain or stop of the replicas being replaced is the point of no return:
once it began, the old replicas cannot take traffic back, so a failure from then on rolls
forward and leaves the rest to the next plan.
"""

from __future__ import annotations

from dataclasses import replace

from declare.apply.context import ApplyContext
from declare.apply.events import StatusNotShown, UndoFailed, UndoStep
from declare.apply.handlers import REPLICA_GRACE_SECONDS
from declare.apply.progress import Progress
from declare.plan.actions import Action, SetRoutes, ShiftTraffic, StartReplica
from declare.state.document import UPDATE_FAILED, EndpointRecord, ReplicaRecord


def undo(ctx: ApplyContext, name: str, record_status: bool = True) -> str:
    """Reverse what `name`'s apply finished; return the endpoint's failure message (and
    record it as UPDATE_FAILED, unless `record_status` is off: the runtime's repairs)."""
    progress = ctx.progress(name)
    message = progress.error or ""
    done: tuple[Action, ...] = tuple(reversed(progress.done))
    if progress.past_return:
        done = ()
        message = "switched to the new config, but " + message
    restored = False
    for action in done:
        try:
            restored = _undo_one(ctx, name, progress, action, restored)
        except Exception as exc:  # keep undoing the rest
            ctx.emit(UndoFailed(action, str(exc)))
    if record_status and name in ctx.ledger.state.endpoints:
        ctx.ledger.update(name, lambda r: r.with_status(UPDATE_FAILED, message))
    shown = ctx.ledger.show_status()
    if shown is not None:
        ctx.emit(StatusNotShown(shown))
    return message


def _undo_one(
    ctx: ApplyContext, name: str, progress: Progress, action: Action, restored: bool
) -> bool:
    """Undo one finished action; whether the routing is now back to the snapshot."""
    p = action.payload
    if isinstance(p, StartReplica):
        handle = progress.handles.get(p.slot)
        if handle is not None:
            ctx.emit(UndoStep(action, f"stopping {handle.id}"))
            ctx.stop_handle(name, handle, REPLICA_GRACE_SECONDS)
    elif isinstance(p, SetRoutes | ShiftTraffic) and progress.snapshot and not restored:
        old = progress.snapshot
        ctx.emit(UndoStep(action, "all traffic back to what served before"))
        ctx.ledger.update(name, lambda r: _restored(r, old))
        ctx.ledger.push(required=True)
        return True
    return restored


def _restored(current: EndpointRecord, old: EndpointRecord) -> EndpointRecord:
    """`current` routed as `old` was, its replicas with the rotation flags they had then."""
    flags = {x.id: (x.ready, x.retired) for x in old.replicas}
    return replace(
        current,
        spec=old.spec,
        models=old.models,
        routes=old.routes,
        serving=old.serving,
        split=old.split,
        replicas=tuple(_flagged(x, flags) for x in current.replicas),
    )


def _flagged(x: ReplicaRecord, flags: dict[str, tuple[bool, bool]]) -> ReplicaRecord:
    if x.id not in flags:
        return x
    ready, retired = flags[x.id]
    return replace(x, ready=ready, retired=retired)
