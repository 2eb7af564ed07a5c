"""Views of what is recorded and what runs: `declare show` (the state) and `declare status`
(each endpoint in Databricks' GET shape, with what declare sees of its replicas).

Pure: values in, text or JSON-able dicts out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from declare.describe import describe, entity_state, is_ready
from declare.diff import Actual
from declare.model.scaling import DEFAULT_REPLICA_CONCURRENCY
from declare.ports import RuntimeStatus
from declare.state.document import EndpointRecord, State
from declare.state.scaling import utc


def state_lines(state: State, url: Callable[[str], str]) -> list[str]:
    """`declare show`: the recorded state, one endpoint after the other."""
    if not state.endpoints:
        return ["The state is empty: no endpoint has been applied."]
    out = [f"# state serial {state.serial}, lineage {state.lineage}"]
    for name, ep in sorted(state.endpoints.items()):
        out.append(
            f'endpoint "{name}" ({ep.provider}): {ep.config_update}, config v{ep.config_version}'
        )
        if ep.message:
            out.append(f"  message: {ep.message.splitlines()[0]}")
        for r in ep.routes:
            model = ep.models.get(r.served_entity_name)
            desc = model.describe() if model else "?"
            out.append(f"  route {r.served_entity_name} {r.traffic_percentage}% -> {desc}")
        for rep in ep.replicas:
            flag = "in rotation" if rep.ready and not rep.retired else "not in rotation"
            out.append(f"  replica {rep.id} [{rep.entity}] {rep.handle.url} ({flag})")
        for ev in ep.events[-5:]:
            out.append(f"  {utc(ev.at)} {ev.entity} {ev.kind}: {ev.detail}")
        out.append(f"  url: {url(name)}")
    return out


def _entities(record: EndpointRecord, actual: Actual, per_replica: int) -> dict[str, Any]:
    """Per served entity: replicas alive in rotation, its replica range (by the concurrency
    one replica of its provider serves), the runtime's target and why."""
    out: dict[str, Any] = {}
    for e in record.spec.entities if record.spec else ():
        serving = record.serving_replicas(e.name)
        scale = record.scale.get(e.name)
        alive = sum(actual.alive(x.id) for x in serving)
        state = entity_state(record, e.name)
        if serving and not alive and state["deployment"] == "DEPLOYMENT_READY":
            # the state says in rotation, yet none of them runs (a crash loop says more)
            dead = actual.replicas.get(serving[0].id)
            why = f": {dead.reason}" if dead is not None and dead.reason else ""
            state = {
                "deployment": "DEPLOYMENT_RECOVERING",
                "deployment_state_message": f"none of its {len(serving)} replica(s) in "
                f"rotation runs{why}",
            }
        out[e.name] = {
            "replicas_in_rotation": alive,
            "range": e.replica_range(per_replica).short(),
            "target": scale.target if scale else len(serving),
            "reason": scale.reason if scale else "",
            "state": state,
        }
    return out


def status_json(
    state: State,
    actual: Actual,
    url: Callable[[str], str],
    runtime: RuntimeStatus | None,
    per_replica: Mapping[str, int] | None = None,
    capture_root: Path | None = None,
    capture: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """`declare status --json`: the gateway, the runtime, and each endpoint as Databricks
    describes it plus what declare sees (`declare`: URL, replicas alive and recorded, the
    message, each entity's count and the runtime's reason, its recent decisions, and its
    inference table when it captures: name and folder below `capture_root`).
    `per_replica`: the concurrency one replica serves, by endpoint (default 4). `capture`:
    the running gateway's capture counters (captured, dropped, written, failed, buffered),
    shown as `capture` when given."""
    endpoints = []
    for name, ep in sorted(state.endpoints.items()):
        desc = describe(ep)
        if desc["state"]["ready"] == "READY" and not is_ready(ep, actual.alive):
            desc["state"]["ready"] = "NOT_READY"  # what runs, not what was recorded
        desc["declare"] = {
            "invocation_url": url(name),
            "replicas_alive": sum(actual.alive(rep.id) for rep in ep.replicas),
            "replicas_recorded": len(ep.replicas),
            "message": ep.message,
            "entities": _entities(
                ep, actual, (per_replica or {}).get(name, DEFAULT_REPLICA_CONCURRENCY)
            ),
            "events": [
                {"at": utc(ev.at), "entity": ev.entity, "kind": ev.kind, "detail": ev.detail}
                for ev in ep.events[-5:]
            ],
        }
        target = ep.spec.capture if ep.spec is not None else None
        if target is not None:
            desc["declare"]["inference_table"] = {
                "name": target.table_name,
                "path": str(target.path(capture_root)) if capture_root else target.relative_path,
            }
        endpoints.append(desc)
    return {
        "gateway": "running" if actual.gateway_running else "not running",
        "runtime": {
            "running": True,
            "pid": runtime.pid,
            "keeper_pid": runtime.keeper_pid,
            "supervisor": runtime.supervisor,
        }
        if runtime
        else {"running": False},
        **({"capture": dict(capture)} if capture is not None else {}),
        "endpoints": endpoints,
    }


def status_lines(status: dict[str, Any], host: str, port: int) -> list[str]:
    """`declare status`: one line per endpoint (and its message)."""
    rt = status["runtime"]
    out = [
        f"gateway: {status['gateway']} on {host}:{port}",
        (
            f"runtime: running (pid {rt['pid']}, supervised by systemd)"
            if rt.get("supervisor") == "systemd"
            else f"runtime: running (pid {rt['pid']}, keeper {rt['keeper_pid']})"
        )
        if rt["running"]
        else "runtime: not running (nothing heals or scales between applies)",
    ]
    capture = status.get("capture")
    if capture and capture.get("dropped"):
        out.append(
            f"capture: {capture['dropped']} requests dropped (the capture buffer was full), "
            f"{capture['written']} written"
        )
    if not status["endpoints"]:
        out.append("no endpoints")
    for d in status["endpoints"]:
        extra = d["declare"]
        out.append(
            f"{d['name']}: {d['state']['ready']}, {d['state']['config_update']}, "
            f"{extra['replicas_alive']}/{extra['replicas_recorded']} replicas alive, "
            f"{extra['invocation_url']}"
        )
        if extra["message"]:
            out.append(f"  {extra['message'].splitlines()[0]}")
        if "inference_table" in extra:
            table = extra["inference_table"]
            out.append(f"  inference table {table['name']}: {table['path']}")
        for name, ent in extra["entities"].items():
            line = f"  {name}: {ent['replicas_in_rotation']} in rotation, target {ent['target']}"
            line += f" of {ent['range']}; {ent['state']['deployment_state_message']}"
            out.append(line)
            if ent["reason"]:
                out.append(f"    last decision: {ent['reason']}")
    return out
