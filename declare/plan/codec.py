"""Plans as JSON and back: the one place where changes and typed action payloads meet JSON.

Saved plans (`declare.plan.saved`) and the plan's JSON view encode with `action_to_json` and
`change_to_json`; a saved plan is decoded with `action_from_json` and `change_from_json`.
Decoding a damaged document raises KeyError, TypeError or ValueError (the caller says
where). Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from declare.diff import (
    Adoption,
    Change,
    DesiredEndpoint,
    EndpointChange,
    FieldChange,
    Impact,
    ReplicaStart,
)
from declare.model import (
    CaptureTarget,
    EndpointSpec,
    EntitySpec,
    Guards,
    ReplayPolicy,
    ReplicaHandle,
    ReplicaSpec,
    ResolvedModel,
    ShadowPolicy,
)
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
from declare.state.document import EndpointRecord

# -- actions ------------------------------------------------------------------------------


def payload_to_json(p: Payload) -> dict[str, Any]:
    """The payload's JSON object (the `payload` of an action in plan JSON)."""
    match p:
        case StartGateway():
            return {
                "host": p.host,
                "port": p.port,
                "settings_hash": p.settings_hash,
                "replace": p.replace,
            }
        case AdoptGateway():
            return {"host": p.host, "port": p.port, "settings_hash": p.settings_hash}
        case StopGateway() | RemoveRoutes() | StopRuntime():
            return {}
        case StartRuntime():
            return {"settings_hash": p.settings_hash}
        case Build():
            return {
                "provider": p.provider,
                "model": p.model.to_json(),
                "workload_type": p.workload_type,
                "key": p.key,
                "ref": p.ref,
            }
        case StartReplica():
            return {"slot": p.slot, "replica_spec": p.spec.to_json()}
        case AdoptReplica():
            return {"slot": p.slot, "handle": p.handle.to_json(), "index": p.index}
        case AwaitReady():
            return {"slot": p.slot, "model": p.model.to_json()}
        case Replay() | Shadow():
            return _evidence_json(p)
        case ShiftTraffic():
            return {
                "step": p.step,
                "of": p.of,
                "percent": p.percent,
                "split": [list(t) for t in p.split],
            }
        case Bake():
            return {
                "step": p.step,
                "of": p.of,
                "seconds": p.seconds,
                "guards": p.guards.to_json(),
                "watch": [list(t) for t in p.watch],
            }
        case SetRoutes():
            return {
                "change": p.change.value,
                "spec": p.spec.to_json(),
                "models": {k: m.to_json() for k, m in p.models.items()},
                "serving": dict(p.serving),
                "retire": list(p.retire),
                "forget": list(p.forget),
            }
        case Drain():
            return {"replica_ids": list(p.replica_ids)}
        case StopReplica() | ForgetReplica() | StopOrphan():
            return {"handle": p.handle.to_json()}


def _evidence_json(p: Replay | Shadow) -> dict[str, Any]:
    if isinstance(p, Replay):
        return {
            "policy": p.policy.to_json(),
            "pairs": [list(t) for t in p.pairs],
            "capture": p.capture.to_json() if p.capture else None,
            "available": p.available,
            "skip": p.skip,
        }
    return {
        "policy": p.policy.to_json(),
        "pair": list(p.pair),
        "model": p.model.to_json() if p.model else None,
    }


def _pair(raw: Any) -> tuple[str, str, str, str]:
    a, b, c, d = (str(x) for x in raw)
    return (a, b, c, d)


def _split(raw: Any) -> tuple[tuple[str, str, int], ...]:
    return tuple((str(e), str(g), int(n)) for e, g, n in raw)


_DECODERS: Mapping[ActionKind, Callable[[Mapping[str, Any]], Payload]] = {
    ActionKind.START_GATEWAY: lambda d: StartGateway(
        str(d["host"]), int(d["port"]), str(d["settings_hash"]), bool(d.get("replace", False))
    ),
    ActionKind.ADOPT_GATEWAY: lambda d: AdoptGateway(
        str(d["host"]), int(d["port"]), str(d["settings_hash"])
    ),
    ActionKind.STOP_GATEWAY: lambda d: StopGateway(),
    ActionKind.START_RUNTIME: lambda d: StartRuntime(str(d["settings_hash"])),
    ActionKind.STOP_RUNTIME: lambda d: StopRuntime(),
    ActionKind.BUILD: lambda d: Build(
        str(d["provider"]),
        ResolvedModel.from_json(d["model"]),
        str(d["workload_type"]),
        str(d["key"]),
        str(d["ref"]),
    ),
    ActionKind.START_REPLICA: lambda d: StartReplica(
        str(d["slot"]), ReplicaSpec.from_json(d["replica_spec"])
    ),
    ActionKind.ADOPT_REPLICA: lambda d: AdoptReplica(
        str(d["slot"]), ReplicaHandle.from_json(d["handle"]), int(d["index"])
    ),
    ActionKind.AWAIT_READY: lambda d: AwaitReady(
        str(d["slot"]), ResolvedModel.from_json(d["model"])
    ),
    ActionKind.REPLAY: lambda d: Replay(
        ReplayPolicy.from_json(d["policy"]),
        tuple(_pair(t) for t in d["pairs"]),
        CaptureTarget.from_json(d["capture"]) if d.get("capture") else None,
        int(d["available"]),
        str(d.get("skip") or ""),
    ),
    ActionKind.SHADOW: lambda d: Shadow(
        ShadowPolicy.from_json(d["policy"]),
        _pair(d["pair"]),
        ResolvedModel.from_json(d["model"]) if d.get("model") else None,
    ),
    ActionKind.SHIFT_TRAFFIC: lambda d: ShiftTraffic(
        int(d["step"]), int(d["of"]), int(d["percent"]), _split(d["split"])
    ),
    ActionKind.BAKE: lambda d: Bake(
        int(d["step"]),
        int(d["of"]),
        float(d["seconds"]),
        Guards.from_json(d["guards"]),
        tuple((str(e), str(g)) for e, g in d["watch"]),
    ),
    ActionKind.SET_ROUTES: lambda d: SetRoutes(
        change=Change(d["change"]),
        spec=EndpointSpec.from_json(d["spec"]),
        models={k: ResolvedModel.from_json(m) for k, m in d["models"].items()},
        serving={str(k): str(v) for k, v in d["serving"].items()},
        retire=tuple(str(x) for x in d["retire"]),
        forget=tuple(str(x) for x in d["forget"]),
    ),
    ActionKind.REMOVE_ROUTES: lambda d: RemoveRoutes(),
    ActionKind.DRAIN: lambda d: Drain(tuple(str(x) for x in d["replica_ids"])),
    ActionKind.STOP_REPLICA: lambda d: StopReplica(ReplicaHandle.from_json(d["handle"])),
    ActionKind.FORGET_REPLICA: lambda d: ForgetReplica(ReplicaHandle.from_json(d["handle"])),
    ActionKind.STOP_ORPHAN: lambda d: StopOrphan(ReplicaHandle.from_json(d["handle"])),
}


def action_to_json(a: Action) -> dict[str, Any]:
    return {
        "id": a.id,
        "kind": a.kind.value,
        "endpoint": a.endpoint,
        "summary": a.summary,
        "payload": payload_to_json(a.payload),
    }


def action_from_json(data: Mapping[str, Any]) -> Action:
    kind = ActionKind(data["kind"])
    endpoint = data["endpoint"]
    return Action(
        str(data["id"]),
        None if endpoint is None else str(endpoint),
        str(data["summary"]),
        _DECODERS[kind](data["payload"]),
    )


# -- changes ------------------------------------------------------------------------------


def change_to_json(c: EndpointChange) -> dict[str, Any]:
    return {
        "name": c.name,
        "kind": c.kind.value,
        "provider": c.provider,
        "before": c.before.to_json() if c.before else None,
        "after": {
            "spec": c.after.spec.to_json(),
            "models": {k: m.to_json() for k, m in c.after.models.items()},
            "per_replica": c.after.per_replica,
        }
        if c.after
        else None,
        "fields": [
            {"path": f.path, "before": f.before, "after": f.after, "impact": f.impact.value}
            for f in c.fields
        ],
        "starts": [
            {
                "entity": s.entity.to_json(),
                "model": s.model.to_json(),
                "generation": s.generation,
                "index": s.index,
                "reason": s.reason,
            }
            for s in c.starts
        ],
        "stops": [h.to_json() for h in c.stops],
        "forgets": [h.to_json() for h in c.forgets],
        "adopts": [
            {
                "handle": a.handle.to_json(),
                "index": a.index,
                "model": a.model.to_json(),
                "routed": a.routed,
            }
            for a in c.adopts
        ],
        "route_push": c.route_push,
        "routing_stale": c.routing_stale,
        "drift": list(c.drift),
        "capacity": [c.capacity_before, c.capacity_after, c.capacity_peak],
    }


def change_from_json(d: Mapping[str, Any]) -> EndpointChange:
    after = d.get("after")
    cap = d.get("capacity") or [0, 0, 0]
    return EndpointChange(
        name=d["name"],
        kind=Change(d["kind"]),
        provider=d["provider"],
        before=EndpointRecord.from_json(d["before"]) if d.get("before") else None,
        after=DesiredEndpoint(
            EndpointSpec.from_json(after["spec"]),
            {k: ResolvedModel.from_json(m) for k, m in after["models"].items()},
            int(after.get("per_replica", 4)),
        )
        if after
        else None,
        fields=tuple(
            FieldChange(f["path"], f["before"], f["after"], Impact(f["impact"]))
            for f in d.get("fields", [])
        ),
        starts=tuple(
            ReplicaStart(
                EntitySpec.from_json(s["entity"]),
                ResolvedModel.from_json(s["model"]),
                s["generation"],
                int(s["index"]),
                s["reason"],
            )
            for s in d.get("starts", [])
        ),
        stops=tuple(ReplicaHandle.from_json(h) for h in d.get("stops", [])),
        forgets=tuple(ReplicaHandle.from_json(h) for h in d.get("forgets", [])),
        adopts=tuple(
            Adoption(
                ReplicaHandle.from_json(a["handle"]),
                int(a["index"]),
                ResolvedModel.from_json(a["model"]),
                bool(a.get("routed")),
            )
            for a in d.get("adopts", [])
        ),
        route_push=bool(d.get("route_push")),
        routing_stale=bool(d.get("routing_stale")),
        drift=tuple(d.get("drift", [])),
        capacity_before=int(cap[0]),
        capacity_after=int(cap[1]),
        capacity_peak=int(cap[2]),
    )
