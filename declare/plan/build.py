"""Build the plan: endpoint changes -> a DAG of small actions. Pure; no I/O.

The graph is made by a list of small steps (Terraform's transformers), each adding actions or
ordering constraints, each constraint commented where it is made:

1. gateway   start the gateway when an endpoint needs it and it is not running (or its
             settings changed: stop, then start); stop it when no endpoint is left.
             A gateway the state lost that runs as declare.yaml asks is adopted (recorded).
   runtime   likewise the runtime (when declare.yaml enables it); when it stops, it stops
             before anything else.
2. builds    one build per distinct model environment that is not yet built (shared).
3. replicas  start + await-ready per new replica; adopt + await-ready per running replica the
             state lost that matches the manifest (Terraform's import).
4. routes    one set-routes per created/updated endpoint: the atomic traffic switch. With a
             progressive rollout (canary, linear), shift-traffic steps and bakes come first,
             and a bake after the switch keeps the old replicas warm until it passes.
             Before any traffic moves to new entities: `rollout.replay` (the captured
             requests replayed; skipped, saying why, when too few were captured and the
             manifest allows it) and then `rollout.shadow` (live requests mirrored).
5. retire    drain the replicas taken out of rotation, then stop them; forget dead ones.
6. deletes   remove an endpoint's routes, drain, stop its replicas.
7. orphans   stop replicas that run under this project's labels but no state knows; one of
             an endpoint being routed drains and stops only after its switch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import networkx as nx

from declare.diff import Change, EndpointChange, Impact
from declare.model import ReplayPolicy, ReplicaHandle, ReplicaSpec, RolloutPolicy, ShadowPolicy
from declare.plan.actions import (
    Action,
    AdoptGateway,
    AdoptReplica,
    AwaitReady,
    Bake,
    Build,
    Drain,
    ForgetReplica,
    Pairs,
    Plan,
    RemoveRoutes,
    Replay,
    SetRoutes,
    Shadow,
    ShiftTraffic,
    Split,
    StartGateway,
    StartReplica,
    StartRuntime,
    StopGateway,
    StopOrphan,
    StopReplica,
    StopRuntime,
)
from declare.provider import BuildInfo


@dataclass(frozen=True)
class GatewayInput:
    """The gateway as it runs and as declare.yaml wants it."""

    running: bool
    host: str
    port: int
    settings_hash: str
    recorded_hash: str | None = None  # from the state; None when never started
    # the state lost it: `recorded_hash` is what the running gateway says it was started with
    adopt: bool = False


@dataclass(frozen=True)
class RuntimeInput:
    """The runtime as it runs and as declare.yaml (and the environment) want it."""

    enabled: bool
    running: bool
    settings_hash: str
    recorded_hash: str | None = None  # from the state; None when never started
    supervisor: str = "declare"  # systemd: apply hands over to the unit's runtime


@dataclass(frozen=True)
class PlanInput:
    project: str
    changes: tuple[EndpointChange, ...]
    gateway: GatewayInput
    builds: Mapping[str, BuildInfo] = field(default_factory=dict)  # by generation
    orphans: tuple[ReplicaHandle, ...] = ()
    routed: frozenset[str] = frozenset()  # replica ids the gateway sends requests to now
    destroy: bool = False
    # Whether an endpoint still needs the gateway after this plan; None: judge from
    # `changes` (a targeted plan passes it, since endpoints it leaves out still serve).
    gateway_needed: bool | None = None
    # The runtime; None in the runtime's own plans (it never starts or stops itself).
    runtime: RuntimeInput | None = None
    # Replayable captured requests per endpoint whose rollout replays (its inference table).
    captured: Mapping[str, int] = field(default_factory=dict)


class _Graph:
    """Actions in insertion order plus edges; insertion order breaks topological ties."""

    def __init__(self) -> None:
        self.actions: dict[str, Action] = {}
        self.edges: list[tuple[str, str]] = []

    def add(self, action: Action) -> str:
        if action.id not in self.actions:
            self.actions[action.id] = action
        return action.id

    def edge(self, before: str | None, after: str | None) -> None:
        if before is not None and after is not None:
            self.edges.append((before, after))

    def freeze(self, inp: PlanInput) -> Plan:
        g: nx.DiGraph = nx.DiGraph()
        order = {aid: i for i, aid in enumerate(self.actions)}
        g.add_nodes_from(self.actions)
        g.add_edges_from(self.edges)
        ordered = list(nx.lexicographical_topological_sort(g, key=lambda n: order[n]))
        return Plan(
            changes=inp.changes,
            actions=tuple(self.actions[a] for a in ordered),
            edges=tuple(dict.fromkeys(self.edges)),
            orphans=tuple(h.id for h in inp.orphans),
            destroy=inp.destroy,
        )


def build_plan(inp: PlanInput) -> Plan:
    g = _Graph()
    stop_rt = _runtime_stop(g, inp)
    start_gw = _gateway_start(g, inp)
    builds = _builds(g, inp)
    inp = replace(inp, changes=tuple(_label_rebuilds(c, builds) for c in inp.changes))
    tails: list[str] = []
    for change in inp.changes:
        if change.kind is Change.UPDATE and change.after is None:
            # refresh-only: forget what died outside declare; nothing else
            tails += _retire(g, change.name, (), change.forgets, None)
        elif change.kind in (Change.CREATE, Change.UPDATE):
            tails += _create_or_update(g, inp, change, start_gw, builds)
        elif change.kind is Change.DELETE:
            tails += _delete(g, change)
    tails += _orphans(g, inp)
    _gateway_stop(g, inp, tails)
    _runtime_start(g, inp)
    if stop_rt is not None:
        # The runtime stops first: it must not heal what this plan takes down.
        for aid in list(g.actions):
            if aid != stop_rt and aid != "runtime.start":
                g.edge(stop_rt, aid)
    return g.freeze(inp)


# 1. gateway ----------------------------------------------------------------------------


def _gateway_needed(inp: PlanInput) -> bool:
    if inp.gateway_needed is not None:
        return inp.gateway_needed
    return any(c.after is not None for c in inp.changes)


def _gateway_start(g: _Graph, inp: PlanInput) -> str | None:
    gw = inp.gateway
    if not _gateway_needed(inp):
        return None
    # A gateway that runs with settings the state does not record (the state was lost, or
    # written by a declare that did not record them) may run without auth or with old
    # limits: it is restarted like one whose settings changed.
    restart = gw.running and gw.recorded_hash != gw.settings_hash
    if gw.running and not restart and gw.adopt:
        return g.add(
            Action(
                "gateway.adopt",
                None,
                f"adopt the gateway running on {gw.host}:{gw.port} "
                "(its settings are those declare.yaml asks for)",
                AdoptGateway(gw.host, gw.port, gw.settings_hash),
            )
        )
    if gw.running and not restart:
        return None
    if restart:
        # One action: the new gateway takes over the port, then the old one drains and
        # stops (`GatewayControl.restart`), so no request meets a closed port.
        why = "its settings changed" if gw.recorded_hash else "its settings are not recorded"
        summary = (
            f"restart the gateway on {gw.host}:{gw.port} ({why}; the new one takes over "
            "the port, then the old one drains)"
        )
    else:
        summary = f"start the gateway on {gw.host}:{gw.port}"
    payload = StartGateway(gw.host, gw.port, gw.settings_hash, replace=restart)
    return g.add(Action("gateway.start", None, summary, payload))


def _gateway_stop(g: _Graph, inp: PlanInput, tails: Sequence[str]) -> None:
    gw = inp.gateway
    if _gateway_needed(inp) or not (gw.running or gw.recorded_hash is not None):
        return
    stop_id = g.add(Action("gateway.stop", None, "stop the gateway", StopGateway()))
    # The gateway goes last: endpoints being removed are drained through it first.
    for tail in tails:
        g.edge(tail, stop_id)


# 1b. runtime ----------------------------------------------------------------------------


def _runtime_wanted(inp: PlanInput) -> bool:
    rt = inp.runtime
    return rt is not None and rt.enabled and _gateway_needed(inp)


def _runtime_stop(g: _Graph, inp: PlanInput) -> str | None:
    """Stop the runtime when nothing needs it or its settings changed (then start again)."""
    rt = inp.runtime
    if rt is None or not (rt.running or rt.recorded_hash is not None):
        return None
    wanted = _runtime_wanted(inp)
    changed = rt.recorded_hash is not None and rt.recorded_hash != rt.settings_hash
    if wanted and rt.running and not changed:
        return None
    if wanted and not rt.running:
        return None  # nothing to stop; _runtime_start starts it
    why = " (its settings changed)" if wanted else ""
    return g.add(Action("runtime.stop", None, f"stop the runtime{why}", StopRuntime()))


def _runtime_start(g: _Graph, inp: PlanInput) -> None:
    rt = inp.runtime
    if rt is None or not _runtime_wanted(inp):
        return
    changed = rt.recorded_hash is not None and rt.recorded_hash != rt.settings_hash
    if rt.running and not changed:
        return
    start_id = g.add(
        Action(
            "runtime.start",
            None,
            "hand the endpoints to the runtime under systemd (replaces what dies, "
            "autoscales, scales to zero and wakes)"
            if rt.supervisor == "systemd"
            else "start the runtime (replaces what dies, autoscales, scales to zero and wakes)",
            StartRuntime(rt.settings_hash),
        )
    )
    # A restart with new settings: the old runtime goes first.
    g.edge("runtime.stop" if "runtime.stop" in g.actions else None, start_id)


# 2. builds -----------------------------------------------------------------------------


def _builds(g: _Graph, inp: PlanInput) -> dict[str, str]:
    """Build action id by generation, for generations whose build is needed and not cached."""
    out: dict[str, str] = {}
    for change in inp.changes:
        for start in change.starts:
            info = inp.builds.get(start.generation)
            if info is None or not info.needed or info.cached:
                continue
            aid = g.add(
                Action(
                    f"build[{info.key}]",
                    None,
                    f"build {info.ref or info.key} for {start.model.describe()} (not cached)",
                    Build(
                        change.provider, start.model, start.entity.workload_type, info.key, info.ref
                    ),
                )
            )
            out[start.generation] = aid
    return out


def _label_rebuilds(change: EndpointChange, builds: Mapping[str, str]) -> EndpointChange:
    """Fields of an entity whose new replicas need a fresh build are labelled `rebuild`."""
    rebuilt = {s.entity.name for s in change.starts if s.generation in builds}
    if not rebuilt:
        return change
    fields = tuple(
        replace(f, impact=Impact.REBUILD)
        if f.impact in (Impact.REPLACE, Impact.ROLLING_RESTART)
        and any(f.path.startswith(f"served_entities[{name}]") for name in rebuilt)
        else f
        for f in change.fields
    )
    return replace(change, fields=fields)


def _build_note(info: BuildInfo | None) -> str:
    """How a start-replica line names its build: '; image REF (cached)' when one exists
    ('; environment KEY (cached)' for a provider's virtualenv).

    A needed build that is not cached has its own `build` action ("... (not cached)"), so
    the plan says for each build whether it is cached.
    """
    if info is None or not info.needed:
        return ""
    what = info.ref or info.key
    named = what if what.startswith(f"{info.kind} ") else f"{info.kind} {what}"
    return f"; {named}" + (" (cached)" if info.cached else "")


# 3. replicas ---------------------------------------------------------------------------


def _replicas(
    g: _Graph, inp: PlanInput, change: EndpointChange, builds: Mapping[str, str]
) -> list[str]:
    """start + await-ready per new replica; returns the await-ready ids."""
    name = change.name
    ready_ids: list[str] = []
    for s in change.starts:
        slot = f"{name}/{s.entity.name}/{s.generation}/{s.index}"
        spec = ReplicaSpec(
            project=inp.project,
            endpoint=name,
            entity=s.entity.name,
            generation=s.generation,
            index=s.index,
            model=s.model,
            workload_size=s.entity.workload_size,
            workload_type=s.entity.workload_type,
            environment_vars=s.entity.environment_vars,
            batching=s.entity.batching,
        )
        addr = f"endpoint.{name}.entity[{s.entity.name}].replica[{s.index}]"
        start_id = g.add(
            Action(
                f"{addr}.start",
                name,
                f"start replica {s.entity.name}[{s.index}] serving {s.model.describe()}"
                f" ({change.provider}; {s.reason}{_build_note(inp.builds.get(s.generation))})",
                StartReplica(slot, spec),
            )
        )
        # A replica starts from its built image/environment.
        g.edge(builds.get(s.generation), start_id)
        ready_id = g.add(
            Action(
                f"{addr}.ready",
                name,
                f"await {s.entity.name}[{s.index}] answering a real prediction",
                AwaitReady(slot, s.model),
            )
        )
        # Readiness is checked on the started replica.
        g.edge(start_id, ready_id)
        ready_ids.append(ready_id)
    return ready_ids + _adopted(g, change)


def _adopted(g: _Graph, change: EndpointChange) -> list[str]:
    """adopt + await-ready per running replica taken on (a lost state); the await-ready ids."""
    name = change.name
    ready_ids: list[str] = []
    for a in change.adopts:
        entity = a.handle.entity
        slot = f"{name}/{entity}/{a.handle.generation}/{a.index}"
        addr = f"endpoint.{name}.entity[{entity}].replica[{a.index}]"
        routed = "; the gateway routes it now" if a.routed else ""
        adopt_id = g.add(
            Action(
                f"{addr}.adopt",
                name,
                f"adopt replica {a.handle.id} as {entity}[{a.index}] serving "
                f"{a.model.describe()} (running, matches the manifest{routed})",
                AdoptReplica(slot, a.handle, a.index),
            )
        )
        ready_id = g.add(
            Action(
                f"{addr}.ready",
                name,
                f"await {entity}[{a.index}] answering a real prediction",
                AwaitReady(slot, a.model),
            )
        )
        # An adopted replica goes into rotation once it answered, as a started one.
        g.edge(adopt_id, ready_id)
        ready_ids.append(ready_id)
    return ready_ids


# 4. routes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rollout:
    """What a route push moves: old and new splits, the targets to watch, and the policy."""

    old: Split
    new: Split
    watch: tuple[tuple[str, str], ...]
    policy: RolloutPolicy

    @property
    def rolling(self) -> bool:
        return bool(self.watch) and any(p > 0 for _, _, p in self.old)

    @property
    def progressive(self) -> bool:
        return self.rolling and self.policy.progressive


def _rollout_of(change: EndpointChange) -> _Rollout:
    assert change.after is not None
    d = change.after
    old = change.before.traffic() if change.before else ()
    new = tuple(
        (r.served_entity_name, d.serving[r.served_entity_name], r.traffic_percentage)
        for r in d.spec.routes
    )
    had = {(e, gen) for e, gen, p in old if p > 0}
    watch = tuple((e, gen) for e, gen, p in new if p > 0 and (e, gen) not in had)
    if change.kind is not Change.UPDATE:
        watch = ()  # a new endpoint has no old traffic to roll from
    return _Rollout(old, new, watch, d.spec.rollout)


def _create_or_update(
    g: _Graph,
    inp: PlanInput,
    change: EndpointChange,
    start_gw: str | None,
    builds: Mapping[str, str],
) -> list[str]:
    assert change.after is not None
    ready_ids = _replicas(g, inp, change, builds)
    tails: list[str] = []
    after_switch: str | None = None
    if change.route_push:
        rollout = _rollout_of(change)
        evidence = _evidence(g, inp, change, rollout, ready_ids, start_gw)
        previous = _steps(g, change.name, rollout, evidence, start_gw)
        routes_id = _switch(g, change, rollout, previous, start_gw)
        tails.append(routes_id)
        after_switch = routes_id
        if rollout.rolling and rollout.policy.bakes:
            # The old replicas stay up (out of rotation) until the new config baked at 100 %.
            n = len(rollout.policy.steps)
            after_switch = _bake(g, change.name, n, n, rollout, routes_id)
            tails.append(after_switch)
    tails += _retire(g, change.name, change.stops, change.forgets, after_switch)
    return tails or ready_ids


def pairs_of(rollout: _Rollout) -> Pairs:
    """Each new target with what it is compared with: its own entity's serving
    generation when that serves now, else the target carrying the most traffic now."""
    old = [(e, gen, p) for e, gen, p in rollout.old if p > 0]
    out: list[tuple[str, str, str, str]] = []
    for entity, generation in rollout.watch:
        same = [(e, gen) for e, gen, _ in old if e == entity]
        serving = same[0] if same else max(old, key=lambda t: t[2])[:2]
        out.append((entity, generation, serving[0], serving[1]))
    return tuple(out)


def _evidence(
    g: _Graph,
    inp: PlanInput,
    change: EndpointChange,
    rollout: _Rollout,
    ready_ids: list[str],
    start_gw: str | None,
) -> list[str]:
    """The replay and shadow steps, before any traffic moves; returns what the first
    traffic step waits for."""
    policy = rollout.policy
    if not rollout.rolling or (policy.replay is None and policy.shadow is None):
        return ready_ids
    pairs = pairs_of(rollout)
    previous = ready_ids
    if policy.replay is not None:
        replay_id = g.add(_replay(inp, change, policy.replay, pairs))
        # Replayed only once every new replica answers.
        for rid in previous:
            g.edge(rid, replay_id)
        previous = [replay_id]
    if policy.shadow is not None:
        shadow_id = g.add(_shadow(change, rollout, policy.shadow, pairs))
        # Mirrored once the candidate answers (and its replay passed), through the gateway.
        for rid in previous:
            g.edge(rid, shadow_id)
        g.edge(start_gw, shadow_id)
        previous = [shadow_id]
    return previous


def _replay(inp: PlanInput, change: EndpointChange, replay: ReplayPolicy, pairs: Pairs) -> Action:
    name = change.name
    capture = change.before.spec.capture if change.before and change.before.spec else None
    available = inp.captured.get(name, 0)
    skip = ""
    if capture is None:
        skip = "the endpoint captures no requests (no inference table is enabled)"
    elif available < replay.min_requests:
        skip = (
            f"its inference table {capture.table_name} holds {available} replayable "
            f"requests, fewer than min_requests {replay.min_requests}"
        )
    compared = ", ".join(f"{c} against {s}" for c, _, s, _ in pairs)
    summary = (
        f"replay skipped: {skip}"
        if skip
        else f"replay the newest {min(replay.requests, available)} captured requests "
        f"(of {available}): {compared}; roll back if {replay.bounds.describe()}"
    )
    return Action(
        f"endpoint.{name}.replay", name, summary, Replay(replay, pairs, capture, available, skip)
    )


def _shadow(
    change: EndpointChange, rollout: _Rollout, shadow: ShadowPolicy, pairs: Pairs
) -> Action:
    """The candidate that gets the most new traffic is mirrored."""
    news = {(e, gen): p for e, gen, p in rollout.new}
    pair = max(pairs, key=lambda t: news.get((t[0], t[1]), 0))
    others = [c for c, _, _, _ in pairs if c != pair[0]]
    model = change.after.models.get(pair[0]) if change.after else None
    return Action(
        f"endpoint.{change.name}.shadow",
        change.name,
        f"shadow {shadow.percent}% of live requests to {pair[0]} for "
        f"{shadow.seconds:g}s, users answered as now; roll back if "
        f"{shadow.bounds.describe()}" + (f" (not mirrored: {', '.join(others)})" if others else ""),
        Shadow(shadow, pair, model),
    )


def _steps(
    g: _Graph, name: str, rollout: _Rollout, ready_ids: list[str], start_gw: str | None
) -> list[str]:
    """The shift-traffic steps (and bakes) before the last step; returns what the switch
    waits for."""
    previous: list[str] = ready_ids
    if not rollout.progressive:
        return previous
    policy = rollout.policy
    n = len(policy.steps)
    for step, percent in enumerate(policy.steps[:-1], 1):
        split = blend(rollout.old, rollout.new, percent)
        shift_id = g.add(
            Action(
                f"endpoint.{name}.shift[{step}]",
                name,
                f"shift traffic, step {step}/{n} ({percent}% to the new config): "
                + ", ".join(f"{e} {p}%" for e, _, p in split),
                ShiftTraffic(step, n, percent, split),
            )
        )
        # A step starts once the new replicas answer and the previous step baked.
        for rid in previous:
            g.edge(rid, shift_id)
        g.edge(start_gw, shift_id)
        previous = [shift_id]
        if policy.bakes:
            previous = [_bake(g, name, step, n, rollout, shift_id)]
    return previous


def _switch(
    g: _Graph,
    change: EndpointChange,
    rollout: _Rollout,
    previous: list[str],
    start_gw: str | None,
) -> str:
    assert change.after is not None
    d = change.after
    n = len(rollout.policy.steps)
    lead = f"shift traffic, step {n}/{n}: " if rollout.progressive else "route traffic: "
    routes_id = g.add(
        Action(
            f"endpoint.{change.name}.routes",
            change.name,
            lead
            + ", ".join(f"{r.served_entity_name} {r.traffic_percentage}%" for r in d.spec.routes),
            SetRoutes(
                change=change.kind,
                spec=d.spec,
                models=d.models,
                serving=d.serving,
                retire=tuple(h.id for h in change.stops),
                forget=tuple(h.id for h in change.forgets),
            ),
        )
    )
    # Traffic moves only to replicas that answered a real prediction (and after the
    # last canary step baked).
    for rid in previous:
        g.edge(rid, routes_id)
    # Routes are pushed to a running gateway.
    g.edge(start_gw, routes_id)
    return routes_id


def _bake(g: _Graph, name: str, step: int, of: int, rollout: _Rollout, after: str) -> str:
    policy = rollout.policy
    condition = policy.guards.rollback_condition()
    judged = f"; roll back if {condition}" if condition else ""
    bake_id = g.add(
        Action(
            f"endpoint.{name}.bake[{step}]",
            name,
            f"bake {policy.bake_seconds:g}s at step {step}/{of}, watching "
            + ", ".join(e for e, _ in rollout.watch)
            + judged,
            Bake(step, of, policy.bake_seconds, policy.guards, rollout.watch),
        )
    )
    # A bake watches the traffic the step before it set.
    g.edge(after, bake_id)
    return bake_id


def blend(old: Split, new: Split, percent: int) -> Split:
    """`percent`% of the traffic split as `new`, the rest as `old`; integers summing to 100."""
    weights: dict[tuple[str, str], float] = {}
    for e, gen, p in old:
        weights[(e, gen)] = weights.get((e, gen), 0.0) + p * (100 - percent) / 100
    for e, gen, p in new:
        weights[(e, gen)] = weights.get((e, gen), 0.0) + p * percent / 100
    floors = {k: int(v) for k, v in weights.items()}
    left = 100 - sum(floors.values())
    for k in sorted(weights, key=lambda k: weights[k] - floors[k], reverse=True)[:left]:
        floors[k] += 1
    return tuple((e, gen, floors[(e, gen)]) for (e, gen) in weights if floors[(e, gen)] > 0)


# 5. retire -----------------------------------------------------------------------------


def _retire(
    g: _Graph,
    name: str,
    stops: Sequence[ReplicaHandle],
    forgets: Sequence[ReplicaHandle],
    after: str | None,
) -> list[str]:
    tails: list[str] = []
    drain_id = None
    if stops:
        drain_id = g.add(
            Action(
                f"endpoint.{name}.drain",
                name,
                "drain in-flight requests from " + ", ".join(h.id for h in stops),
                Drain(tuple(h.id for h in stops)),
            )
        )
        # Drain only once the new routing no longer sends requests to these replicas.
        g.edge(after, drain_id)
    for h in stops:
        stop_id = g.add(
            Action(
                f"endpoint.{name}.replica[{h.id}].stop",
                name,
                f"stop replica {h.id} ({h.entity})",
                StopReplica(h),
            )
        )
        # A replica stops after its in-flight requests finished.
        g.edge(drain_id, stop_id)
        tails.append(stop_id)
    for h in forgets:
        forget_id = g.add(
            Action(
                f"endpoint.{name}.replica[{h.id}].forget",
                name,
                f"forget replica {h.id} ({h.entity}), which is not running",
                ForgetReplica(h),
            )
        )
        # Forget a dead replica once the routing no longer names it.
        g.edge(after, forget_id)
        tails.append(forget_id)
    return tails


# 6. deletes ----------------------------------------------------------------------------


def _delete(g: _Graph, change: EndpointChange) -> list[str]:
    name = change.name
    remove_id = g.add(
        Action(
            f"endpoint.{name}.routes",
            name,
            f"remove endpoint {name} from the gateway",
            RemoveRoutes(),
        )
    )
    return [remove_id, *_retire(g, name, change.stops, change.forgets, remove_id)]


# 7. orphans ----------------------------------------------------------------------------


def _orphans(g: _Graph, inp: PlanInput) -> list[str]:
    tails = []
    for h in inp.orphans:
        routes_id = f"endpoint.{h.endpoint}.routes"
        switched = routes_id in g.actions and any(
            c.name == h.endpoint and c.after is not None for c in inp.changes
        )
        carries = "; the gateway routes it now" if h.id in inp.routed else ""
        after = f"; it stops after the switch of {h.endpoint}" if switched else ""
        stop_id = g.add(
            Action(
                f"orphan[{h.id}].stop",
                None,
                f"stop orphan replica {h.id} (endpoint {h.endpoint}, {h.entity}): "
                f"running under this project's labels, unknown to the state{carries}{after}",
                StopOrphan(h),
            )
        )
        if switched:
            drain_id = g.add(
                Action(
                    f"orphan[{h.id}].drain",
                    None,
                    f"drain in-flight requests from orphan replica {h.id}",
                    Drain((h.id,)),
                )
            )
            # The gateway may route it now (the state was lost, its table was not): it
            # stops only once the switch routes its endpoint to what this plan made ready.
            g.edge(routes_id, drain_id)
            g.edge(drain_id, stop_id)
        tails.append(stop_id)
    return tails
