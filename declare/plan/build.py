"""Build the plan: endpoint changes -> a DAG of small actions. Pure; no I/O.

The graph is made by a list of small steps (Terraform's transformers), each adding actions or
ordering constraints, each constraint commented where it is made:

1. gateway   start the gateway when an endpoint needs it and it is not running (or its
             settings changed: stop, then start); stop it when no endpoint is left.
2. builds    one build per distinct model environment that is not yet built (shared).
3. replicas  start + await-ready per new replica.
4. routes    one set-routes per created/updated endpoint: the atomic traffic switch. With a
             progressive rollout (canary, linear), shift-traffic steps and bakes come first,
             and a bake after the switch keeps the old replicas warm until it passes.
5. retire    drain the replicas taken out of rotation, then stop them; forget dead ones.
6. deletes   remove an endpoint's routes, drain, stop its replicas.
7. orphans   stop replicas that run under this project's labels but no state knows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import networkx as nx

from declare.diff import Change, EndpointChange, Impact
from declare.model import ReplicaHandle, ReplicaSpec, RolloutPolicy
from declare.plan.actions import Action, ActionKind, Plan
from declare.provider import BuildInfo


@dataclass(frozen=True)
class GatewayInput:
    """The gateway as it runs and as declare.yaml wants it."""

    running: bool
    host: str
    port: int
    settings_hash: str
    recorded_hash: str | None = None  # from the state; None when never started


@dataclass(frozen=True)
class PlanInput:
    project: str
    changes: tuple[EndpointChange, ...]
    gateway: GatewayInput
    builds: Mapping[str, BuildInfo] = field(default_factory=dict)  # by generation
    orphans: tuple[ReplicaHandle, ...] = ()
    destroy: bool = False
    # Whether an endpoint still needs the gateway after this plan; None: judge from
    # `changes` (a targeted plan passes it, since endpoints it leaves out still serve).
    gateway_needed: bool | None = None


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
    restart = gw.running and gw.recorded_hash is not None and gw.recorded_hash != gw.settings_hash
    if gw.running and not restart:
        return None
    stop_id = None
    if restart:
        stop_id = g.add(
            Action(
                "gateway.stop",
                ActionKind.STOP_GATEWAY,
                None,
                "stop the gateway (its settings changed)",
            )
        )
    start_id = g.add(
        Action(
            "gateway.start",
            ActionKind.START_GATEWAY,
            None,
            f"start the gateway on {gw.host}:{gw.port}",
            {"host": gw.host, "port": gw.port, "settings_hash": gw.settings_hash},
        )
    )
    # The old gateway must release its port before the new one binds it.
    g.edge(stop_id, start_id)
    return start_id


def _gateway_stop(g: _Graph, inp: PlanInput, tails: Sequence[str]) -> None:
    gw = inp.gateway
    if _gateway_needed(inp) or not (gw.running or gw.recorded_hash is not None):
        return
    stop_id = g.add(Action("gateway.stop", ActionKind.STOP_GATEWAY, None, "stop the gateway"))
    # The gateway goes last: endpoints being removed are drained through it first.
    for tail in tails:
        g.edge(tail, stop_id)


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
                    ActionKind.BUILD,
                    None,
                    f"build {info.ref or info.key} for {start.model.describe()} (not cached)",
                    {
                        "provider": change.provider,
                        "model": start.model.to_json(),
                        "workload_type": start.entity.workload_type,
                        "key": info.key,
                        "ref": info.ref,
                    },
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
    """How a start-replica line names its build: '; image REF (cached)' when one exists.

    A needed build that is not cached has its own `build` action ("... (not cached)"), so
    the plan says for each build whether it is cached.
    """
    if info is None or not info.needed:
        return ""
    return f"; image {info.ref or info.key}" + (" (cached)" if info.cached else "")


# 3-5. create / update ------------------------------------------------------------------


def _create_or_update(
    g: _Graph,
    inp: PlanInput,
    change: EndpointChange,
    start_gw: str | None,
    builds: Mapping[str, str],
) -> list[str]:
    assert change.after is not None
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
        )
        addr = f"endpoint.{name}.entity[{s.entity.name}].replica[{s.index}]"
        start_id = g.add(
            Action(
                f"{addr}.start",
                ActionKind.START_REPLICA,
                name,
                f"start replica {s.entity.name}[{s.index}] serving {s.model.describe()}"
                f" ({change.provider}; {s.reason}{_build_note(inp.builds.get(s.generation))})",
                {"slot": slot, "replica_spec": spec.to_json()},
            )
        )
        # A replica starts from its built image/environment.
        g.edge(builds.get(s.generation), start_id)
        ready_id = g.add(
            Action(
                f"{addr}.ready",
                ActionKind.AWAIT_READY,
                name,
                f"await {s.entity.name}[{s.index}] answering a real prediction",
                {"slot": slot, "model": s.model.to_json()},
            )
        )
        # Readiness is checked on the started replica.
        g.edge(start_id, ready_id)
        ready_ids.append(ready_id)

    tails: list[str] = []
    routes_id = None
    after_switch: str | None = None
    if change.route_push:
        d = change.after
        policy = d.spec.rollout
        old = change.before.traffic() if change.before else ()
        new = tuple(
            (r.served_entity_name, d.serving[r.served_entity_name], r.traffic_percentage)
            for r in d.spec.routes
        )
        had = {(e, gen) for e, gen, p in old if p > 0}
        watch = [[e, gen] for e, gen, p in new if p > 0 and (e, gen) not in had]
        rolling = bool(watch) and bool(had) and change.kind is Change.UPDATE
        previous: list[str] = ready_ids
        n = len(policy.steps)
        if rolling and policy.progressive:
            for step, percent in enumerate(policy.steps[:-1], 1):
                split = blend(old, new, percent)
                shift_id = g.add(
                    Action(
                        f"endpoint.{name}.shift[{step}]",
                        ActionKind.SHIFT_TRAFFIC,
                        name,
                        f"shift traffic, step {step}/{n} ({percent}% to the new config): "
                        + ", ".join(f"{e} {p}%" for e, _, p in split),
                        {
                            "step": step,
                            "of": n,
                            "percent": percent,
                            "split": [list(t) for t in split],
                        },
                    )
                )
                # A step starts once the new replicas answer and the previous step baked.
                for rid in previous:
                    g.edge(rid, shift_id)
                g.edge(start_gw, shift_id)
                previous = [shift_id]
                if policy.bakes:
                    previous = [_bake(g, name, step, n, policy, watch, shift_id)]
        routes_id = g.add(
            Action(
                f"endpoint.{name}.routes",
                ActionKind.SET_ROUTES,
                name,
                (
                    f"shift traffic, step {n}/{n}: "
                    if rolling and policy.progressive
                    else "route traffic: "
                )
                + ", ".join(
                    f"{r.served_entity_name} {r.traffic_percentage}%" for r in d.spec.routes
                ),
                {
                    "change": change.kind.value,
                    "spec": d.spec.to_json(),
                    "models": {k: m.to_json() for k, m in d.models.items()},
                    "serving": d.serving,
                    "retire": [h.id for h in change.stops],
                    "forget": [h.id for h in change.forgets],
                },
            )
        )
        # Traffic moves only to replicas that answered a real prediction (and after the
        # last canary step baked).
        for rid in previous:
            g.edge(rid, routes_id)
        # Routes are pushed to a running gateway.
        g.edge(start_gw, routes_id)
        tails.append(routes_id)
        after_switch = routes_id
        if rolling and policy.bakes:
            # The old replicas stay up (out of rotation) until the new config baked at 100 %.
            after_switch = _bake(g, name, n, n, policy, watch, routes_id)
            tails.append(after_switch)
    tails += _retire(g, name, change.stops, change.forgets, after_switch)
    return tails or ready_ids


def _bake(
    g: _Graph,
    name: str,
    step: int,
    of: int,
    policy: RolloutPolicy,
    watch: list[list[str]],
    after: str,
) -> str:
    condition = policy.guards.rollback_condition()
    judged = f"; roll back if {condition}" if condition else ""
    bake_id = g.add(
        Action(
            f"endpoint.{name}.bake[{step}]",
            ActionKind.BAKE,
            name,
            f"bake {policy.bake_seconds:g}s at step {step}/{of}, watching "
            + ", ".join(e for e, _ in watch)
            + judged,
            {
                "step": step,
                "of": of,
                "seconds": policy.bake_seconds,
                "guards": policy.guards.to_json(),
                "watch": watch,
            },
        )
    )
    # A bake watches the traffic the step before it set.
    g.edge(after, bake_id)
    return bake_id


def blend(
    old: tuple[tuple[str, str, int], ...], new: tuple[tuple[str, str, int], ...], percent: int
) -> tuple[tuple[str, str, int], ...]:
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
                ActionKind.DRAIN,
                name,
                "drain in-flight requests from " + ", ".join(h.id for h in stops),
                {"replica_ids": [h.id for h in stops]},
            )
        )
        # Drain only once the new routing no longer sends requests to these replicas.
        g.edge(after, drain_id)
    for h in stops:
        stop_id = g.add(
            Action(
                f"endpoint.{name}.replica[{h.id}].stop",
                ActionKind.STOP_REPLICA,
                name,
                f"stop replica {h.id} ({h.entity})",
                {"handle": h.to_json()},
            )
        )
        # A replica stops after its in-flight requests finished.
        g.edge(drain_id, stop_id)
        tails.append(stop_id)
    for h in forgets:
        forget_id = g.add(
            Action(
                f"endpoint.{name}.replica[{h.id}].forget",
                ActionKind.FORGET_REPLICA,
                name,
                f"forget replica {h.id} ({h.entity}), which is not running",
                {"handle": h.to_json()},
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
            ActionKind.REMOVE_ROUTES,
            name,
            f"remove endpoint {name} from the gateway",
        )
    )
    return [remove_id, *_retire(g, name, change.stops, change.forgets, remove_id)]


# 7. orphans ----------------------------------------------------------------------------


def _orphans(g: _Graph, inp: PlanInput) -> list[str]:
    return [
        g.add(
            Action(
                f"orphan[{h.id}].stop",
                ActionKind.STOP_ORPHAN,
                None,
                f"stop orphan replica {h.id} (endpoint {h.endpoint}, {h.entity}): "
                "running under this project's labels, unknown to the state",
                {"handle": h.to_json()},
            )
        )
        for h in inp.orphans
    ]
