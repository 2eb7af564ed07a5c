"""Plan data: the small named actions, their typed payloads, and the plan that orders them.

An `Action` is data only: an address, the endpoint it belongs to, a line for humans and a
payload, one frozen dataclass per kind, holding the core's values (a `ReplicaSpec`, a
`ResolvedModel`, an `EndpointSpec`), never loose maps. The kind is the payload's. Payloads
become JSON only where a plan leaves the process (`declare.plan.codec`: saved plans and the
plan's JSON view). `Plan.graph()` gives the DAG (networkx) whose edges say "must finish
before".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import networkx as nx

from declare.diff import Change, EndpointChange
from declare.model import (
    CaptureTarget,
    EndpointSpec,
    Guards,
    ReplayPolicy,
    ReplicaHandle,
    ReplicaSpec,
    ResolvedModel,
    ShadowPolicy,
)

Split = tuple[tuple[str, str, int], ...]  # (entity, generation, percentage) per target
# (candidate entity, its generation, serving entity, its generation): what is compared
Pairs = tuple[tuple[str, str, str, str], ...]


class ActionKind(Enum):
    START_GATEWAY = "start-gateway"
    ADOPT_GATEWAY = "adopt-gateway"
    STOP_GATEWAY = "stop-gateway"
    START_RUNTIME = "start-runtime"
    STOP_RUNTIME = "stop-runtime"
    BUILD = "build"
    START_REPLICA = "start-replica"
    ADOPT_REPLICA = "adopt-replica"
    AWAIT_READY = "await-ready"
    REPLAY = "replay"
    SHADOW = "shadow"
    SHIFT_TRAFFIC = "shift-traffic"
    BAKE = "bake"
    SET_ROUTES = "set-routes"
    REMOVE_ROUTES = "remove-routes"
    DRAIN = "drain"
    STOP_REPLICA = "stop-replica"
    FORGET_REPLICA = "forget-replica"
    STOP_ORPHAN = "stop-orphan"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_SYMBOLS = {
    ActionKind.START_GATEWAY: "+",
    ActionKind.ADOPT_GATEWAY: "~",
    ActionKind.STOP_GATEWAY: "-",
    ActionKind.START_RUNTIME: "+",
    ActionKind.STOP_RUNTIME: "-",
    ActionKind.BUILD: "+",
    ActionKind.START_REPLICA: "+",
    ActionKind.ADOPT_REPLICA: "~",
    ActionKind.AWAIT_READY: "?",
    ActionKind.REPLAY: "?",
    ActionKind.SHADOW: "?",
    ActionKind.SHIFT_TRAFFIC: "~",
    ActionKind.BAKE: "?",
    ActionKind.SET_ROUTES: "~",
    ActionKind.REMOVE_ROUTES: "-",
    ActionKind.DRAIN: "~",
    ActionKind.STOP_REPLICA: "-",
    ActionKind.FORGET_REPLICA: "-",
    ActionKind.STOP_ORPHAN: "-",
}


# -- payloads: one per kind ---------------------------------------------------------------


@dataclass(frozen=True)
class StartGateway:
    """Start the gateway; `replace`: it takes over from the running one (a settings change),
    which stops only once the new one answers."""

    KIND: ClassVar = ActionKind.START_GATEWAY
    host: str
    port: int
    settings_hash: str
    replace: bool = False


@dataclass(frozen=True)
class AdoptGateway:
    """Record the gateway that runs with the settings declare.yaml asks for, as it runs
    (the state lost it; its own record says what it was started with)."""

    KIND: ClassVar = ActionKind.ADOPT_GATEWAY
    host: str
    port: int
    settings_hash: str


@dataclass(frozen=True)
class StopGateway:
    KIND: ClassVar = ActionKind.STOP_GATEWAY


@dataclass(frozen=True)
class StartRuntime:
    """Start the runtime that heals and scales between applies (`settings_hash`: of its
    settings and of the environment it is started with, never the values)."""

    KIND: ClassVar = ActionKind.START_RUNTIME
    settings_hash: str


@dataclass(frozen=True)
class StopRuntime:
    KIND: ClassVar = ActionKind.STOP_RUNTIME


@dataclass(frozen=True)
class Build:
    """Build a model environment (an image) that `key` names; shared by equal environments."""

    KIND: ClassVar = ActionKind.BUILD
    provider: str
    model: ResolvedModel
    workload_type: str
    key: str
    ref: str


@dataclass(frozen=True)
class StartReplica:
    """Start one replica; `slot` names it for the actions after (await, undo)."""

    KIND: ClassVar = ActionKind.START_REPLICA
    slot: str
    spec: ReplicaSpec


@dataclass(frozen=True)
class AdoptReplica:
    """Record a running replica the state does not know, as slot `index` of its entity
    (Terraform's import); `slot` names it for the await-ready after. Never undone."""

    KIND: ClassVar = ActionKind.ADOPT_REPLICA
    slot: str
    handle: ReplicaHandle
    index: int


@dataclass(frozen=True)
class AwaitReady:
    KIND: ClassVar = ActionKind.AWAIT_READY
    slot: str
    model: ResolvedModel


@dataclass(frozen=True)
class Replay:
    """Before traffic moves: replay the endpoint's newest captured requests (from the
    inference table `capture`) against each candidate and the entity it is compared with
    (`pairs`), judged by the policy's bounds. `available`: the replayable requests the table
    held at plan time; `skip`: why the step is skipped ('' when it runs)."""

    KIND: ClassVar = ActionKind.REPLAY
    policy: ReplayPolicy
    pairs: Pairs
    capture: CaptureTarget | None
    available: int
    skip: str = ""


@dataclass(frozen=True)
class Shadow:
    """Before traffic moves: mirror `policy.percent` of live requests to the candidate of
    `pair` for `policy.seconds`, users answered by the serving entities only; judged by the
    policy's bounds on what the gateway measured."""

    KIND: ClassVar = ActionKind.SHADOW
    policy: ShadowPolicy
    pair: tuple[str, str, str, str]
    model: ResolvedModel | None = None  # the candidate's, named in its captured rows


@dataclass(frozen=True)
class ShiftTraffic:
    """One step of a progressive rollout: the traffic split while it bakes."""

    KIND: ClassVar = ActionKind.SHIFT_TRAFFIC
    step: int
    of: int
    percent: int
    split: Split


@dataclass(frozen=True)
class Bake:
    """Watch the new targets (`watch`: (entity, generation)) for `seconds`, judged by guards."""

    KIND: ClassVar = ActionKind.BAKE
    step: int
    of: int
    seconds: float
    guards: Guards
    watch: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SetRoutes:
    """The atomic switch: the endpoint's new config, its serving generations, and which
    replicas leave rotation (`retire`) or the record (`forget`)."""

    KIND: ClassVar = ActionKind.SET_ROUTES
    change: Change
    spec: EndpointSpec
    models: Mapping[str, ResolvedModel]
    serving: Mapping[str, str]
    retire: tuple[str, ...] = ()
    forget: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoveRoutes:
    KIND: ClassVar = ActionKind.REMOVE_ROUTES


@dataclass(frozen=True)
class Drain:
    KIND: ClassVar = ActionKind.DRAIN
    replica_ids: tuple[str, ...]


@dataclass(frozen=True)
class StopReplica:
    KIND: ClassVar = ActionKind.STOP_REPLICA
    handle: ReplicaHandle


@dataclass(frozen=True)
class ForgetReplica:
    KIND: ClassVar = ActionKind.FORGET_REPLICA
    handle: ReplicaHandle


@dataclass(frozen=True)
class StopOrphan:
    KIND: ClassVar = ActionKind.STOP_ORPHAN
    handle: ReplicaHandle


Payload = (
    StartGateway
    | AdoptGateway
    | StopGateway
    | StartRuntime
    | StopRuntime
    | Build
    | StartReplica
    | AdoptReplica
    | AwaitReady
    | Replay
    | Shadow
    | ShiftTraffic
    | Bake
    | SetRoutes
    | RemoveRoutes
    | Drain
    | StopReplica
    | ForgetReplica
    | StopOrphan
)

PAYLOAD_TYPES: Mapping[ActionKind, type[Payload]] = {
    t.KIND: t
    for t in (
        StartGateway,
        AdoptGateway,
        StopGateway,
        StartRuntime,
        StopRuntime,
        Build,
        StartReplica,
        AdoptReplica,
        AwaitReady,
        Replay,
        Shadow,
        ShiftTraffic,
        Bake,
        SetRoutes,
        RemoveRoutes,
        Drain,
        StopReplica,
        ForgetReplica,
        StopOrphan,
    )
}


@dataclass(frozen=True)
class Action:
    id: str  # unique address, e.g. endpoint.iris.entity[iris-2].replica[0].start
    endpoint: str | None  # None for project-wide actions (gateway, runtime, builds, orphans)
    summary: str  # one line for humans
    payload: Payload

    @property
    def kind(self) -> ActionKind:
        return self.payload.KIND


@dataclass(frozen=True)
class Plan:
    changes: tuple[EndpointChange, ...]
    actions: tuple[Action, ...]  # in a valid execution order (topological)
    edges: tuple[tuple[str, str], ...]  # (before, after) by action id
    orphans: tuple[str, ...] = ()  # replica ids found running that no state knows
    destroy: bool = False

    def graph(self) -> nx.DiGraph:
        g: nx.DiGraph = nx.DiGraph()
        for a in self.actions:
            g.add_node(a.id)
        g.add_edges_from(self.edges)
        return g

    def action(self, action_id: str) -> Action:
        for a in self.actions:
            if a.id == action_id:
                return a
        raise KeyError(action_id)

    def actions_of(self, endpoint: str) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.endpoint == endpoint)

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    def counts(self) -> dict[str, int]:
        out = {"add": 0, "change": 0, "destroy": 0}
        for c in self.changes:
            if c.kind is Change.CREATE:
                out["add"] += 1
            elif c.kind is Change.UPDATE:
                out["change"] += 1
            elif c.kind is Change.DELETE:
                out["destroy"] += 1
        return out
