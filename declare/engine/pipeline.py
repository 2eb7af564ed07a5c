"""`make_plan`: the stages in order, for a project and its state, with Terraform's modes.

    desired = load_desired(project)            (none for -destroy)
    actual  = refresh(project, state, desired)
    changes = diff(desired, state, actual)      pure
    changes narrowed by --target / --refresh-only
    plan    = build_plan(...)                   pure

The caller holds the state lock. `saved_plan` reads a saved plan and checks it against the
state and a fresh refresh (stale: refused, saying what moved on). Nothing here changes what
runs or what is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from declare.diff import Actual, Change, DesiredEndpoint, EndpointChange, diff, unadopted
from declare.engine.desired import load_desired
from declare.engine.refresh import builds, refresh
from declare.errors import ConfigError, LocatedError, Location, ManifestError, StaleStateError
from declare.evidence.captured import replayable_count
from declare.model.evidence import REFUSE
from declare.plan import GatewayInput, Plan, PlanInput, RuntimeInput, build_plan, saved
from declare.plan.actions import Replay
from declare.project import Project
from declare.state.document import State


@dataclass(frozen=True)
class PlanOptions:
    """Terraform's planning modes: -destroy, -target, -replace, -refresh-only."""

    destroy: bool = False
    targets: frozenset[str] = frozenset()
    replace: frozenset[tuple[str, str]] = frozenset()  # (endpoint, served entity)
    refresh_only: bool = False
    # The runtime's own plans: what runs is kept as recorded (replacing what died, the
    # replica counts it decided); no status to settle, and the runtime never plans itself.
    runtime: bool = False
    exclude: frozenset[str] = frozenset()  # endpoints left out (they still serve)
    # endpoints that may start no replica now (the runtime backs off a crashing entity): the
    # dead are still forgotten and taken out of the gateway's routing
    no_starts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Proposal:
    """A plan and the world it was made against: what the refresh saw, as a saved plan
    records it (`observed`, see `declare.plan.saved`), and as values (`actual`)."""

    plan: Plan
    observed: Mapping[str, Any]
    actual: Actual


def make_plan(project: Project, state: State, options: PlanOptions | None = None) -> Proposal:
    """Every stage, from the manifests to the plan."""
    opts = options or PlanOptions()
    desired = () if opts.destroy else load_desired(project)
    return plan_for(project, state, desired, opts)


def plan_for(
    project: Project,
    state: State,
    desired: tuple[DesiredEndpoint, ...],
    options: PlanOptions | None = None,
) -> Proposal:
    """The stages after resolve: refresh, diff, narrowing by mode, building the plan."""
    opts = options or PlanOptions()
    actual = refresh(project, state, desired)
    needs = builds(project, desired)
    # A state that lost the gateway: the running gateway's own record says what it was
    # started with; when that is what declare.yaml asks for, it is adopted, not restarted.
    recorded_hash = state.gateway.settings_hash if state.gateway else actual.gateway_started_hash
    changes = diff(
        desired, state, actual, recorded_hash, opts.replace, settle_status=not opts.runtime
    )
    _check_addresses(opts, desired, changes)
    inp = _narrow(
        PlanInput(
            project=project.name,
            changes=changes,
            gateway=GatewayInput(
                running=actual.gateway_running,
                host=project.config.gateway_host,
                port=project.config.gateway_port,
                settings_hash=actual.gateway_settings_hash,
                recorded_hash=recorded_hash,
                adopt=state.gateway is None and recorded_hash is not None,
            ),
            builds=needs,
            orphans=unadopted(actual.orphans, changes),
            routed=actual.routed_ids(),
            destroy=opts.destroy,
            runtime=None
            if opts.runtime
            else RuntimeInput(
                enabled=project.config.runtime.enabled,
                running=actual.runtime_running,
                settings_hash=project.runtime_settings_hash(),
                recorded_hash=state.runtime.settings_hash if state.runtime else None,
                supervisor=project.config.runtime.supervisor,
            ),
            captured=_captured(project, changes),
        ),
        opts,
        state,
        bool(desired),
    )
    plan = build_plan(inp)
    _check_replays(plan)
    return Proposal(plan, saved.observe(actual, needs), actual)


def _captured(project: Project, changes: tuple[EndpointChange, ...]) -> dict[str, int]:
    """Replayable captured requests of each endpoint whose new config replays them."""
    out: dict[str, int] = {}
    for c in changes:
        if c.after is None or c.after.spec.rollout.replay is None:
            continue
        target = c.before.spec.capture if c.before and c.before.spec else None
        if target is not None:
            out[c.name] = replayable_count(target.path(project.capture_root()), c.name)
    return out


def _check_replays(plan: Plan) -> None:
    """A replay that cannot run, where the manifest says refuse: the plan is refused at
    the endpoint's `rollout.replay`, saying what is missing."""
    problems: list[LocatedError] = []
    changes = {c.name: c for c in plan.changes}
    for a in plan.actions:
        p = a.payload
        if not isinstance(p, Replay) or not p.skip or p.policy.when_insufficient != REFUSE:
            continue
        change = changes[str(a.endpoint)]
        spec = change.after.spec if change.after else None
        loc = spec.location if spec is not None and spec.location else Location(str(a.endpoint))
        problems.append(
            LocatedError(
                Location(loc.file, loc.line, "rollout.replay"),
                f"endpoint {a.endpoint}: cannot replay before traffic moves: {p.skip}. "
                "Send it traffic with capture on first, lower rollout.replay.min_requests, "
                "or set rollout.replay.when_insufficient: skip",
            )
        )
    if problems:
        raise ManifestError(problems)


def _check_addresses(
    opts: PlanOptions, desired: tuple[DesiredEndpoint, ...], changes: tuple[EndpointChange, ...]
) -> None:
    """--replace and --target must name what exists."""
    for endpoint, entity in sorted(opts.replace):
        d = next((x for x in desired if x.spec.name == endpoint), None)
        if d is None or all(e.name != entity for e in d.spec.entities):
            raise ConfigError(
                f"--replace {endpoint}/{entity}: no such served entity in the manifests"
            )
    known = {c.name for c in changes}
    unknown = sorted(opts.targets - known)
    if unknown:
        raise ConfigError(
            f"--target {', '.join(unknown)}: no such endpoint in the manifests or the "
            f"state; endpoints: {', '.join(sorted(known)) or 'none'}"
        )


def _narrow(inp: PlanInput, opts: PlanOptions, state: State, any_desired: bool) -> PlanInput:
    """-target keeps the named endpoints (the others still serve, so the gateway stays);
    the runtime stops no gateway and no orphan of an endpoint it does not keep;
    -refresh-only keeps only what happened outside declare (dead replicas are forgotten)
    and never starts, restarts or stops the gateway."""
    if opts.targets:
        inp = replace(
            inp,
            changes=tuple(c for c in inp.changes if c.name in opts.targets),
            orphans=(),
            gateway_needed=any_desired or any(n not in opts.targets for n in state.endpoints),
        )
    if opts.no_starts:
        inp = replace(
            inp,
            changes=tuple(
                _without_starts(c) if c.name in opts.no_starts else c for c in inp.changes
            ),
        )
    if opts.exclude:
        inp = replace(
            inp,
            changes=tuple(c for c in inp.changes if c.name not in opts.exclude),
            gateway_needed=any_desired or bool(state.endpoints),
        )
    if opts.runtime:
        # The runtime keeps what was declared and recorded: a state it finds empty or short
        # (lost, being rebuilt by an apply) is no reason to stop the gateway or replicas
        # of endpoints it does not keep; apply adopts or stops those.
        kept = {c.name for c in inp.changes if c.after is not None}
        gateway = inp.gateway
        if state.gateway is None and gateway.running:
            # nor restart or adopt a gateway the state lost: the next apply does
            gateway = replace(gateway, recorded_hash=gateway.settings_hash, adopt=False)
        inp = replace(
            inp,
            orphans=tuple(h for h in inp.orphans if h.endpoint in kept),
            gateway_needed=bool(kept) or gateway.running or bool(inp.gateway_needed),
            gateway=gateway,
        )
    if opts.refresh_only:
        inp = replace(
            inp,
            changes=tuple(_refresh_only(c) for c in inp.changes),
            orphans=(),
            gateway_needed=inp.gateway.running,
            gateway=replace(inp.gateway, recorded_hash=None, adopt=False),
            runtime=None,
        )
    return inp


def _without_starts(c: EndpointChange) -> EndpointChange:
    """`c` starting no replica: what remains is to forget the dead, retire, re-route."""
    if not c.starts:
        return c
    push = bool(c.stops or c.forgets or c.fields or c.routing_stale)
    return replace(
        c,
        starts=(),
        route_push=push,
        kind=c.kind if push or c.kind is not Change.UPDATE else Change.NOOP,
    )


def _refresh_only(c: EndpointChange) -> EndpointChange:
    """Only what happened outside declare: dead replicas are forgotten; nothing restarts."""
    if c.before is None:
        return replace(
            c, kind=Change.NOOP, starts=(), stops=(), forgets=(), adopts=(), route_push=False
        )
    return replace(
        c,
        kind=Change.UPDATE if c.forgets else Change.NOOP,
        fields=(),
        starts=(),
        stops=(),
        adopts=(),
        after=None,
        route_push=False,
        capacity_after=c.capacity_before,
        capacity_peak=c.capacity_before,
    )


def saved_plan(project: Project, state: State, plan_file: Path) -> saved.PlanFile:
    """The saved plan, if it still fits the state and what runs; else StaleStateError."""
    loaded = saved.read(plan_file)
    if loaded.project != project.name:
        raise ConfigError(
            f"{plan_file} was made for project {loaded.project!r}, this is {project.name!r}: "
            "run apply in the folder the plan was made in, or give it as DIR"
        )
    desired = tuple(c.after for c in loaded.plan.changes if c.after is not None)
    now = saved.observe(refresh(project, state, desired), builds(project, desired))
    reasons = saved.stale_reasons(loaded, state, now)
    if reasons:
        raise StaleStateError(
            f"the saved plan {plan_file} is stale; plan again. What changed since it was made:\n"
            + "\n".join(f"  - {r}" for r in reasons)
        )
    return loaded
