"""Views of what is recorded and what runs: `declare show` (the state) and `declare status`
(each endpoint in Databricks' GET shape, with what declare sees of its replicas).

Pure: values in, text or JSON-able dicts out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from declare.describe import describe
from declare.diff import Actual
from declare.state.document import State


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
        out.append(f"  url: {url(name)}")
    return out


def status_json(state: State, actual: Actual, url: Callable[[str], str]) -> dict[str, Any]:
    """`declare status --json`: the gateway, and each endpoint as Databricks describes it
    plus what declare sees (`declare`: URL, replicas alive and recorded, message)."""
    endpoints = []
    for name, ep in sorted(state.endpoints.items()):
        desc = describe(ep)
        desc["declare"] = {
            "invocation_url": url(name),
            "replicas_alive": sum(actual.alive(rep.id) for rep in ep.replicas),
            "replicas_recorded": len(ep.replicas),
            "message": ep.message,
        }
        endpoints.append(desc)
    return {
        "gateway": "running" if actual.gateway_running else "not running",
        "endpoints": endpoints,
    }


def status_lines(status: dict[str, Any], host: str, port: int) -> list[str]:
    """`declare status`: one line per endpoint (and its message)."""
    out = [f"gateway: {status['gateway']} on {host}:{port}"]
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
    return out
