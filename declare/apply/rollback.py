"""Undo a failed endpoint's apply and record UPDATE_FAILED, in an order that never routes a
request to a replica that is stopped:

1. traffic first: if a traffic switch, shift or shadow began (finished or not: its push may have
   reached the gateway before its state write failed), one push of the routing table sends
   all traffic back to what served before (the record snapshotted before traffic first
   moved), with every replica this apply started out of rotation (a scale-up's new replica
   serves an entity that stays routed), and only then is it recorded;
2. then the replicas its starts made, newest first (also one whose start returned but whose
   recording failed, so none is left running unrecorded). If traffic could not be sent back
   while a gateway runs, they are left running, since it may still route to them: the undo
   says so and the next plan converges.

Nothing else needs undoing: a build is shared and harmless, readiness and bakes only
looked, and a drain or stop of the replicas being replaced is the point of no return:
once it began, the old replicas cannot take traffic back, so a failure from then on rolls
forward and leaves the rest to the next plan.

A state write that fails during the undo (the disk that failed the apply is still full) does
not stop it: the routing is pushed before it is recorded, and the outcome carries the write's
error (`Undone.state_error`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

from declare.apply.context import ApplyContext
from declare.apply.events import Serving, StatusNotShown, UndoFailed, UndoStep
from declare.apply.handlers import REPLICA_GRACE_SECONDS
from declare.apply.progress import Progress
from declare.errors import StateError
from declare.plan.actions import Action, SetRoutes, Shadow, ShiftTraffic, StartReplica
from declare.state.document import UPDATE_FAILED, EndpointRecord, ReplicaRecord, State


@dataclass(frozen=True)
class Undone:
    """What an endpoint's undo came to: its failure message, where its traffic goes now,
    and the error of the apply's last failed state write ("" when the state is written)."""

    message: str
    serving: Serving
    state_error: str = ""


def undo(ctx: ApplyContext, name: str, record_status: bool = True) -> Undone:
    """Reverse what `name`'s apply did (see the module docstring) and record UPDATE_FAILED
    with its failure message, unless `record_status` is off (the runtime's repairs)."""
    progress = ctx.progress(name)
    message = progress.error or ""
    if progress.past_return:
        message = "switched to the new config, but " + message
        serving = Serving.NEW
    else:
        serving = _send_traffic_back(ctx, name, progress)
        safe = serving is Serving.BEFORE or _no_gateway(ctx)
        for action in reversed(_begun(progress, StartReplica)):
            _stop_started(ctx, name, progress, action, safe)
    if record_status and name in ctx.ledger.state.endpoints:
        with contextlib.suppress(StateError):  # the outcome carries it (write_error)
            ctx.ledger.update(name, lambda r: r.with_status(UPDATE_FAILED, message))
    shown = ctx.ledger.show_status()
    if shown is not None:
        ctx.emit(StatusNotShown(shown))
    return Undone(message, serving, ctx.ledger.write_error or "")


def _begun(
    progress: Progress, kind: type[StartReplica | SetRoutes | ShiftTraffic | Shadow]
) -> list[Action]:
    """The actions of `kind` that began, finished or not, oldest first."""
    return [a for a in progress.ran if isinstance(a.payload, kind)]


def _send_traffic_back(ctx: ApplyContext, name: str, progress: Progress) -> Serving:
    """One push of the table that routes as before traffic first moved, with the replicas
    this apply started out of rotation, then its record; none when no table can reach them
    (traffic never moved, and none of them is ready)."""
    moves = _begun(progress, SetRoutes) + _begun(progress, ShiftTraffic) + _begun(progress, Shadow)
    old = progress.snapshot if moves else None
    started = {h.id for h in progress.handles.values()}
    current = ctx.ledger.state.endpoints.get(name)
    in_rotation = current is not None and any(x.ready for x in current.replicas if x.id in started)
    if old is None and not in_rotation:
        return Serving.BEFORE  # no table routes to what it started
    if old is not None:
        action = max(moves, key=progress.ran.index)  # the newest move
        what = "all traffic back to what served before"
    else:
        action = _begun(progress, StartReplica)[-1]
        what = "the replicas it started out of rotation"
    ctx.emit(UndoStep(action, what))

    def restored(state: State) -> State:
        record = state.endpoint(name, ctx.provider_of(name))
        if old is not None:
            record = _restored(record, old)
        return state.with_endpoint(_out_of_rotation(record, started))

    try:
        ctx.ledger.switch(restored, "traffic cannot be sent back")
    except StateError as exc:  # pushed, not recorded
        ctx.emit(UndoFailed(action, f"{what}, but not recorded: {exc}"))
    except Exception as exc:
        ctx.emit(UndoFailed(action, str(exc)))
        return Serving.UNKNOWN
    return Serving.BEFORE


def _stop_started(
    ctx: ApplyContext, name: str, progress: Progress, action: Action, safe: bool
) -> None:
    p = action.payload
    handle = progress.handles.get(p.slot) if isinstance(p, StartReplica) else None
    if handle is None:
        return  # its start failed: nothing runs
    if not safe:
        ctx.emit(
            UndoFailed(
                action,
                f"{handle.id} left running: traffic could not be sent back, and the "
                "gateway may still route to it",
            )
        )
        return
    ctx.emit(UndoStep(action, f"stopping {handle.id}"))
    try:
        ctx.stop_handle(name, handle, REPLICA_GRACE_SECONDS)
    except StateError as exc:  # stopped, not recorded: the next plan forgets it
        ctx.emit(UndoFailed(action, f"{handle.id} stopped, but it is not recorded: {exc}"))
    except Exception as exc:  # keep undoing the rest
        ctx.emit(UndoFailed(action, str(exc)))


def _no_gateway(ctx: ApplyContext) -> bool:
    """No gateway runs, so nothing routes to any replica."""
    admin = ctx.project.gateway.admin()
    if admin is None:
        return True
    admin.close()
    return False


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
        shadow=old.shadow,
        replicas=tuple(_flagged(x, flags) for x in current.replicas),
    )


def _out_of_rotation(record: EndpointRecord, ids: set[str]) -> EndpointRecord:
    """`record` with the replicas `ids` not ready: no table routes to them."""
    return replace(
        record,
        replicas=tuple(replace(x, ready=False) if x.id in ids else x for x in record.replicas),
    )


def _flagged(x: ReplicaRecord, flags: dict[str, tuple[bool, bool]]) -> ReplicaRecord:
    if x.id not in flags:
        return x
    ready, retired = flags[x.id]
    return replace(x, ready=ready, retired=retired)
