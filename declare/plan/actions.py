"""Plan data: the small named actions and the plan that orders them.

An `Action` is data only (what to do, to what, with which inputs, all JSON-serializable),
so a plan can be rendered, saved and executed without re-planning. `Plan.graph()` gives the
DAG (networkx) whose edges say "must finish before".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import networkx as nx

from declare.diff import Change, EndpointChange


class ActionKind(Enum):
    START_GATEWAY = "start-gateway"
    STOP_GATEWAY = "stop-gateway"
    BUILD = "build"
    START_REPLICA = "start-replica"
    AWAIT_READY = "await-ready"
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
    ActionKind.STOP_GATEWAY: "-",
    ActionKind.BUILD: "+",
    ActionKind.START_REPLICA: "+",
    ActionKind.AWAIT_READY: "?",
    ActionKind.SHIFT_TRAFFIC: "~",
    ActionKind.BAKE: "?",
    ActionKind.SET_ROUTES: "~",
    ActionKind.REMOVE_ROUTES: "-",
    ActionKind.DRAIN: "~",
    ActionKind.STOP_REPLICA: "-",
    ActionKind.FORGET_REPLICA: "-",
    ActionKind.STOP_ORPHAN: "-",
}


@dataclass(frozen=True)
class Action:
    id: str  # unique address, e.g. endpoint.iris.replica[iris-2/0].start
    kind: ActionKind
    endpoint: str | None  # None for project-wide actions (gateway, orphans)
    summary: str  # one line for humans
    payload: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "endpoint": self.endpoint,
            "summary": self.summary,
            "payload": dict(self.payload),
        }


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
