"""What each kind of action does: one handler per kind, each taking its own payload type,
in a typed registry (`HANDLERS`, complete by construction: `_handler` matches every kind).

Handlers act through the context: providers and the gateway for what runs, the ledger for
what is recorded, the progress book for what later actions and the undo need (started
replicas by slot, the routing before traffic moved). A handler raises to fail its action;
the executor records the failure and the undo reverses what finished (`rollback.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TypeVar, assert_never

from declare import secrets
from declare.apply.context import ApplyContext
from declare.apply.events import (
    DrainTimedOut,
    EvidencePassed,
    EvidenceSkipped,
    GatewayStoppedFirst,
    GuardsPassed,
)
from declare.errors import GatewayError, RolloutGuardError
from declare.evidence import captured
from declare.evidence.replay import replay as replay_requests
from declare.model import Evidence, Figures, judge, verdict
from declare.plan.actions import (
    Action,
    ActionKind,
    AdoptGateway,
    AdoptReplica,
    AwaitReady,
    Bake,
    Build,
    Drain,
    ForgetReplica,
    Payload,
    RemoveRoutes,
    Replay,
    SetRoutes,
    Shadow,
    ShiftTraffic,
    StartGateway,
    StartReplica,
    StartRuntime,
    StopGateway,
    StopOrphan,
    StopReplica,
    StopRuntime,
)
from declare.routing import target_key
from declare.state.document import (
    RecordedGateway,
    RecordedRuntime,
    ReplicaRecord,
    ShadowRoute,
    State,
)

REPLICA_GRACE_SECONDS = 10.0
ORPHAN_GRACE_SECONDS = 5.0

# -- the gateway and builds -----------------------------------------------------------------


def start_gateway(ctx: ApplyContext, action: Action, p: StartGateway) -> None:
    """Start the gateway, or (`replace`) hand over from the running one; then push."""
    settings = ctx.project.gateway_settings()
    if not p.replace:
        ctx.project.gateway.start(settings)
    elif not ctx.project.gateway.restart(settings):
        ctx.emit(GatewayStoppedFirst(action))
    ctx.ledger.record_gateway(RecordedGateway(p.host, p.port, p.settings_hash))
    ctx.ledger.push(required=True)


def adopt_gateway(ctx: ApplyContext, action: Action, p: AdoptGateway) -> None:
    """Record the running gateway; its table stays as it is until a switch replaces it."""
    ctx.ledger.record_gateway(RecordedGateway(p.host, p.port, p.settings_hash))


def stop_gateway(ctx: ApplyContext, action: Action, p: StopGateway) -> None:
    ctx.project.gateway.stop()
    ctx.ledger.record_gateway(None)


def start_runtime(ctx: ApplyContext, action: Action, p: StartRuntime) -> None:
    ctx.project.runtime.start(p.settings_hash)
    ctx.ledger.record_runtime(RecordedRuntime(p.settings_hash))


def stop_runtime(ctx: ApplyContext, action: Action, p: StopRuntime) -> None:
    ctx.project.runtime.stop()
    ctx.ledger.record_runtime(None)


def build(ctx: ApplyContext, action: Action, p: Build) -> None:
    ctx.project.provider(p.provider).build(p.model, p.workload_type)


# -- replicas -------------------------------------------------------------------------------


def start_replica(ctx: ApplyContext, action: Action, p: StartReplica) -> None:
    project = ctx.project
    spec = replace(
        p.spec,
        model_env=project.resolver.model_env,
        environment_vars=secrets.resolve(p.spec.environment_vars, project.environ),
    )
    handle = project.provider(ctx.provider_of(spec.endpoint)).start_replica(spec)
    started = ctx.clock.time()
    ctx.fold(spec.endpoint, lambda pr: pr.with_handle(p.slot, handle))
    ctx.ledger.update(
        spec.endpoint,
        lambda r: r.with_replica(ReplicaRecord(handle, spec.index, started_at=started)),
        ctx.provider_of(spec.endpoint),
    )


def adopt_replica(ctx: ApplyContext, action: Action, p: AdoptReplica) -> None:
    """Record a running replica as if this apply had started it (not yet ready: the
    await-ready after puts it in rotation); nothing is started or stopped."""
    name = str(action.endpoint)
    ctx.fold(name, lambda pr: pr.with_handle(p.slot, p.handle))
    ctx.ledger.update(
        name,
        lambda r: (
            r
            if any(x.id == p.handle.id for x in r.replicas)
            else r.with_replica(ReplicaRecord(p.handle, p.index))
        ),
        ctx.provider_of(name),
    )


def await_ready(ctx: ApplyContext, action: Action, p: AwaitReady) -> None:
    handle = ctx.progress(str(action.endpoint)).handles[p.slot]
    ctx.project.probe.await_ready(
        ctx.project.provider(handle.provider),
        handle,
        p.model,
        ctx.project.config.ready_timeout_seconds,
    )
    ctx.ledger.update(handle.endpoint, lambda r: r.with_ready(handle.id))


def stop_replica(ctx: ApplyContext, action: Action, p: StopReplica) -> None:
    ctx.stop_handle(action.endpoint, p.handle, REPLICA_GRACE_SECONDS)


def forget_replica(ctx: ApplyContext, action: Action, p: ForgetReplica) -> None:
    ctx.stop_handle(action.endpoint, p.handle, REPLICA_GRACE_SECONDS)


def stop_orphan(ctx: ApplyContext, action: Action, p: StopOrphan) -> None:
    ctx.project.provider(p.handle.provider).stop_replica(
        p.handle, grace_seconds=ORPHAN_GRACE_SECONDS
    )


# -- traffic --------------------------------------------------------------------------------


def set_routes(ctx: ApplyContext, action: Action, p: SetRoutes) -> None:
    name = str(action.endpoint)
    retire, forget = set(p.retire), set(p.forget)

    def switched(state: State) -> State:
        before = state.endpoint(name, p.spec.provider)
        ctx.fold(name, lambda pr: pr.with_snapshot(before))
        return state.with_endpoint(
            replace(
                before,
                provider=p.spec.provider,
                spec=p.spec,
                models=p.models,
                routes=p.spec.routes,
                serving=dict(p.serving),
                split=(),
                shadow=None,
                replicas=tuple(
                    replace(x, retired=True) if x.id in retire else x
                    for x in before.replicas
                    if x.id not in forget
                ),
            )
        )

    ctx.ledger.switch(switched, "routes cannot be switched")


def shift_traffic(ctx: ApplyContext, action: Action, p: ShiftTraffic) -> None:
    name = str(action.endpoint)

    def shifted(state: State) -> State:
        before = state.endpoints[name]
        ctx.fold(name, lambda pr: pr.with_snapshot(before))
        return state.with_endpoint(replace(before, split=p.split))

    ctx.ledger.switch(shifted, "traffic cannot be shifted")


def remove_routes(ctx: ApplyContext, action: Action, p: RemoveRoutes) -> None:
    ctx.ledger.update(str(action.endpoint), lambda r: replace(r, routes=(), serving={}))
    ctx.ledger.push(required=False)


def drain(ctx: ApplyContext, action: Action, p: Drain) -> None:
    admin = ctx.project.gateway.admin()
    if admin is None:
        return  # no gateway: nothing can be in flight through it
    timeout = ctx.project.config.drain_timeout_seconds
    with admin:
        drained = admin.drain(list(p.replica_ids), timeout)
    if not drained:
        ctx.emit(DrainTimedOut(action, timeout))


def bake(ctx: ApplyContext, action: Action, p: Bake) -> None:
    """Watch the new targets for `seconds`; a tripped guard raises (and so rolls back)."""
    name = str(action.endpoint)
    clock = ctx.clock
    since = clock.time()
    deadline = clock.monotonic() + p.seconds
    figures: dict[str, Figures] = {}
    while True:
        clock.sleep(min(1.0, max(0.0, deadline - clock.monotonic())))
        ctx.check_deadline(name)
        figures = watch_figures(ctx, name, p.watch, since)
        verdict = judge(p.guards, figures)
        if verdict:
            raise RolloutGuardError(f"rollout guard tripped at step {p.step}/{p.of}: {verdict}")
        if clock.monotonic() >= deadline:
            break
    ctx.emit(GuardsPassed(action, p.step, p.of, figures))


def watch_figures(
    ctx: ApplyContext, name: str, watch: tuple[tuple[str, str], ...], since: float
) -> dict[str, Figures]:
    """The gateway's figures since `since` for each watched (entity, generation)."""
    admin = ctx.project.gateway.admin()
    if admin is None:
        raise GatewayError("the gateway stopped during the bake")
    with admin:
        metrics = admin.metrics(since)
    traffic = ctx.ledger.state.endpoints[name].traffic()
    entities = metrics.get("endpoints", {}).get(name, {}).get("entities", {})
    out: dict[str, Figures] = {}
    for entity, generation in watch:
        m = entities.get(target_key(traffic, entity, generation), {})
        out[entity] = Figures(
            requests=int(m.get("requests", 0)),
            errors=int(m.get("errors", 0)),
            error_rate=float(m.get("error_rate") or 0.0),
            p99_ms=float(m.get("p99_ms") or 0.0),
        )
    return out


# -- evidence before traffic moves -----------------------------------------------------------


def replay(ctx: ApplyContext, action: Action, p: Replay) -> None:
    """Replay the newest captured requests against each candidate and the entity it is
    compared with, straight to their replicas; a tripped bound raises (and so rolls back)."""
    name = str(action.endpoint)
    if p.skip:
        ctx.emit(EvidenceSkipped(action, p.skip))
        return
    if p.capture is None:
        raise RolloutGuardError("replay: the endpoint has no inference table to replay from")
    policy = p.policy
    requests = captured.newest(p.capture.path(ctx.project.capture_root()), name, policy.requests)
    if len(requests) < policy.min_requests:
        raise RolloutGuardError(
            f"replay: the inference table {p.capture.table_name} holds {len(requests)} "
            f"replayable requests now, fewer than min_requests {policy.min_requests}"
        )
    record = ctx.ledger.state.endpoints[name]
    figures: dict[str, Evidence] = {}
    for cand, cand_gen, serving, serving_gen in p.pairs:
        evidence = replay_requests(
            requests,
            [r.handle.url for r in record.serving_replicas(serving, serving_gen)],
            [r.handle.url for r in record.serving_replicas(cand, cand_gen)],
            policy.bounds.tolerance,
            should_stop=lambda: ctx.check_deadline(name),
        )
        figures[cand] = evidence
        if evidence.requests < policy.min_requests:
            raise RolloutGuardError(
                f"replay: {serving} answered only {evidence.requests} of {len(requests)} "
                f"captured requests, fewer than min_requests {policy.min_requests}"
            )
        why = verdict(policy.bounds, cand, evidence)
        if why:
            raise RolloutGuardError(
                f"replay of {len(requests)} captured requests against {serving}: {why}"
            )
    ctx.emit(EvidencePassed(action, figures))


def shadow(ctx: ApplyContext, action: Action, p: Shadow) -> None:
    """Mirror live requests to the candidate for `seconds`, judged as the gateway measures;
    a tripped bound, or too little evidence by the end, raises (and so rolls back). The
    mirror is taken away again either way."""
    name = str(action.endpoint)
    cand, cand_gen, _, _ = p.pair
    policy = p.policy
    route = ShadowRoute(
        cand,
        cand_gen,
        policy.percent,
        policy.bounds.tolerance,
        p.model.name if p.model else None,
        p.model.version if p.model else None,
    )

    def mirrored(state: State) -> State:
        before = state.endpoints[name]
        ctx.fold(name, lambda pr: pr.with_snapshot(before))
        return state.with_endpoint(replace(before, shadow=route))

    def unmirrored(state: State) -> State:
        return state.with_endpoint(replace(state.endpoints[name], shadow=None))

    ctx.ledger.switch(mirrored, "the shadow cannot be set")
    clock = ctx.clock
    since = clock.time()
    deadline = clock.monotonic() + policy.seconds
    evidence = Evidence()
    try:
        while True:
            clock.sleep(min(1.0, max(0.0, deadline - clock.monotonic())))
            ctx.check_deadline(name)
            evidence = shadow_evidence(ctx, name, route.key, since)
            if evidence.requests >= policy.min_requests:
                why = verdict(policy.bounds, cand, evidence)
                if why:
                    raise RolloutGuardError(f"shadow: {why}")
            if clock.monotonic() >= deadline:
                break
        if evidence.requests < policy.min_requests:
            raise RolloutGuardError(
                f"shadow: {evidence.requests} mirrored requests answered in "
                f"{policy.seconds:g}s, fewer than min_requests {policy.min_requests}: not "
                "enough evidence (more traffic, a larger percent or longer seconds)"
            )
    except BaseException:
        with contextlib.suppress(Exception):  # the undo restores the routing anyway
            ctx.ledger.switch(unmirrored, "the shadow cannot be taken away")
        raise
    ctx.ledger.switch(unmirrored, "the shadow cannot be taken away")
    ctx.emit(EvidencePassed(action, {cand: evidence}))


def shadow_evidence(ctx: ApplyContext, name: str, key: str, since: float) -> Evidence:
    """What the gateway measured of the mirrored requests to `key` since `since`."""
    admin = ctx.project.gateway.admin()
    if admin is None:
        raise GatewayError("the gateway stopped during the shadow step")
    with admin:
        metrics = admin.metrics(since)
    m = metrics.get("endpoints", {}).get(name, {}).get("shadow", {}).get(key, {})
    return Evidence(
        requests=int(m.get("requests", 0)),
        errors=int(m.get("errors", 0)),
        rows=int(m.get("rows", 0)),
        differing=int(m.get("differing", 0)),
        p99_ms=float(m.get("p99_ms") or 0.0),
        serving_p99_ms=float(m.get("primary_p99_ms") or 0.0),
    )


# -- the registry ---------------------------------------------------------------------------

Handler = Callable[[ApplyContext, Action], None]
P = TypeVar("P", bound=Payload)


def _bind(payload_type: type[P], fn: Callable[[ApplyContext, Action, P], None]) -> Handler:
    def run(ctx: ApplyContext, action: Action) -> None:
        payload = action.payload
        if not isinstance(payload, payload_type):  # an Action's kind is its payload's
            raise TypeError(f"{action.id}: {type(payload).__name__} is not a {payload_type}")
        fn(ctx, action, payload)

    return run


def _handler(kind: ActionKind) -> Handler:
    match kind:
        case ActionKind.START_GATEWAY:
            return _bind(StartGateway, start_gateway)
        case ActionKind.ADOPT_GATEWAY:
            return _bind(AdoptGateway, adopt_gateway)
        case ActionKind.STOP_GATEWAY:
            return _bind(StopGateway, stop_gateway)
        case ActionKind.START_RUNTIME:
            return _bind(StartRuntime, start_runtime)
        case ActionKind.STOP_RUNTIME:
            return _bind(StopRuntime, stop_runtime)
        case ActionKind.BUILD:
            return _bind(Build, build)
        case ActionKind.START_REPLICA:
            return _bind(StartReplica, start_replica)
        case ActionKind.ADOPT_REPLICA:
            return _bind(AdoptReplica, adopt_replica)
        case ActionKind.AWAIT_READY:
            return _bind(AwaitReady, await_ready)
        case ActionKind.REPLAY:
            return _bind(Replay, replay)
        case ActionKind.SHADOW:
            return _bind(Shadow, shadow)
        case ActionKind.SHIFT_TRAFFIC:
            return _bind(ShiftTraffic, shift_traffic)
        case ActionKind.BAKE:
            return _bind(Bake, bake)
        case ActionKind.SET_ROUTES:
            return _bind(SetRoutes, set_routes)
        case ActionKind.REMOVE_ROUTES:
            return _bind(RemoveRoutes, remove_routes)
        case ActionKind.DRAIN:
            return _bind(Drain, drain)
        case ActionKind.STOP_REPLICA:
            return _bind(StopReplica, stop_replica)
        case ActionKind.FORGET_REPLICA:
            return _bind(ForgetReplica, forget_replica)
        case ActionKind.STOP_ORPHAN:
            return _bind(StopOrphan, stop_orphan)
        case _:  # mypy proves this unreachable: a kind without a handler fails the check
            assert_never(kind)


HANDLERS: Mapping[ActionKind, Handler] = {kind: _handler(kind) for kind in ActionKind}
