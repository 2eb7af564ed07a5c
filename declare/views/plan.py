"""Two views of one Plan: human text in the style of `terraform plan`, and versioned JSON.

Rendering is pure: a Plan in, a string or a JSON-able dict out. The JSON format is
described by schemas/plan.schema.json.
"""

from __future__ import annotations

import json
from typing import Any

from declare import __version__
from declare.diff import Change, EndpointChange, FieldChange, Impact
from declare.model import AutoscalePolicy, EntitySpec, ReplicaRange
from declare.plan.actions import ActionKind, Plan
from declare.plan.codec import action_to_json

PLAN_FORMAT_VERSION = "1.0"

_HEADINGS = {
    Change.CREATE: "will be created",
    Change.UPDATE: "will be updated in-place",
    Change.DELETE: "will be destroyed",
}
_IMPACT_NOTE = {
    Impact.LIVE: "live, no restart",
    Impact.SCALE: "scale: replicas added or removed, the others keep serving",
    Impact.ROLLING_RESTART: "rolling restart: new replicas replace the old, no downtime",
    Impact.REPLACE: "replace: new replicas, switch traffic, drain and stop the old",
    Impact.REBUILD: "rebuild: a new image is built, then replace",
}


def _batching_text(value: dict[str, Any]) -> str:
    """A served entity's batching as the manifest words it: 'max_batch_size 32, ...'."""
    return f"max_batch_size {value['max_batch_size']}, max_delay_ms {value['max_delay_ms']:g}"


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and "model" in value and "workload_size" in value:
        n = str(value["replicas"])
        text = (
            f"{value['model']}, {value['workload_size']} ({value['concurrency']}), "
            f"{value['workload_type']}, {n} replica{'' if n == '1' else 's'}"
        )
        if value.get("environment_vars"):
            text += f", env {', '.join(sorted(value['environment_vars']))}"
        if value.get("batching"):
            text += f", batching ({_batching_text(value['batching'])})"
        return text
    if isinstance(value, dict) and set(value) == {"max_batch_size", "max_delay_ms"}:
        return _batching_text(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
        return ", ".join(f"{k} {v}%" for k, v in value.items()) or "{}"
    return json.dumps(value, sort_keys=True, default=str)


def _entity_lines(
    e: EntitySpec, model: str, sym: str, rng: ReplicaRange, policy: AutoscalePolicy
) -> list[str]:
    lines = [
        f"      {sym} served_entity {json.dumps(e.name)} {{",
        f"          {sym} model         = {model}",
        f"          {sym} workload      = {e.workload_size} ({e.concurrency_text()}), "
        f"{e.workload_type}, {rng.describe(policy.scale_to_zero_after_seconds)}",
    ]
    if e.environment_vars:
        lines.append(f"          {sym} environment   = {', '.join(sorted(e.environment_vars))}")
    if e.batching is not None:
        lines.append(f"          {sym} batching      = {e.batching.describe()}")
    if e.scale_to_zero_enabled:
        lines.append(
            f"          {sym} scale_to_zero = true (no replica after "
            f"{policy.scale_to_zero_after_seconds:g} s without a request; the next one wakes it)"
        )
    lines.append("        }")
    return lines


def _rollout_line(plan: Plan, c: EndpointChange) -> str | None:
    mine = [
        a for a in plan.actions_of(c.name) if a.kind in (ActionKind.SHIFT_TRAFFIC, ActionKind.BAKE)
    ]
    if not mine or c.after is None:
        return None
    return f"rollout  = {c.after.spec.rollout.describe()}"


def _capacity_lines(c: EndpointChange) -> list[str]:
    if c.kind is Change.DELETE:
        n = c.capacity_before
        return [
            f"      ! stops serving: endpoint {c.name} is destroyed ({n} replica"
            f"{'s' if n != 1 else ''} in rotation now)"
        ]
    lines = []
    if c.kind is Change.UPDATE and (c.starts or c.stops or c.capacity_loss):
        lines.append(
            f"      ~ capacity = {c.capacity_before} -> {c.capacity_after} replicas in rotation"
            f" (peak {c.capacity_peak} while the change runs)"
        )
    if c.capacity_loss:
        lines.append(
            f"      ! capacity loss: from {c.capacity_before} to {c.capacity_after} replicas "
            "in rotation"
        )
    return lines


def _change_block(c: EndpointChange, plan: Plan) -> list[str]:
    lines = [f"  # endpoint.{c.name} {_HEADINGS[c.kind]}"]
    sym = c.kind.symbol
    lines.append(f"  {sym} endpoint {json.dumps(c.name)} {{")
    if c.kind is Change.CREATE and c.after is not None:
        lines.append(f"      + provider = {json.dumps(c.after.spec.provider)}")
        after = c.after
        for e in after.spec.entities:
            lines += _entity_lines(
                e, after.models[e.name].describe(), "+", after.range(e), after.spec.autoscaling
            )
        routes = ", ".join(
            f"{r.served_entity_name} {r.traffic_percentage}%" for r in c.after.spec.routes
        )
        lines.append(f"      + traffic  = {routes}")
    elif c.kind is Change.DELETE and c.before is not None:
        if c.before.spec is not None:
            spec = c.before.spec
            for e in spec.entities:
                model = c.before.models.get(e.name)
                shown = model.describe() if model else e.model_uri
                lines += _entity_lines(e, shown, "-", e.replica_range(), spec.autoscaling)
        lines.append(f"      - replicas = {len(c.before.replicas)}")
    else:
        for f in c.fields:
            lines += _field_lines(f)
    rollout = _rollout_line(plan, c)
    if rollout:
        lines.append(f"      ~ {rollout}")
    lines += _capacity_lines(c)
    for d in c.drift:
        lines.append(f"      ! drift: {d}")
    if c.kind is Change.UPDATE and not c.fields and not c.drift and c.routing_stale:
        lines.append("      ~ routing refreshed (the gateway restarts or lost its table)")
    lines.append("    }")
    return lines


def _field_lines(f: FieldChange) -> list[str]:
    note = f"   # {_IMPACT_NOTE[f.impact]}"
    if f.before is None:
        return [f"      + {f.path} = {_fmt(f.after)}{note}"]
    if f.after is None:
        return [f"      - {f.path} = {_fmt(f.before)}{note}"]
    return [f"      ~ {f.path}: {_fmt(f.before)} -> {_fmt(f.after)}{note}"]


def render_human(plan: Plan) -> str:
    if not plan.has_changes:
        return (
            "No changes. Your endpoints match the manifests and what runs.\n\n"
            "declare has compared the manifests with the recorded state and with what the\n"
            "providers and the gateway report, and found no differences.\n"
        )
    out: list[str] = [
        "declare will perform the following actions:",
        "",
    ]
    for c in plan.changes:
        if c.kind is Change.NOOP:
            continue
        out += _change_block(c, plan)
        out.append("")
    counts = plan.counts()
    out.append("Actions, in order (each waits for those it depends on):")
    for i, a in enumerate(plan.actions, 1):
        out.append(f"  {i:>3}. {a.kind.symbol} {a.summary}")
    out.append("")
    out.append(
        f"Plan: {counts['add']} to add, {counts['change']} to change, "
        f"{counts['destroy']} to destroy; {len(plan.actions)} action"
        f"{'s' if len(plan.actions) != 1 else ''}."
    )
    return "\n".join(out) + "\n"


def _change_json(c: EndpointChange) -> dict[str, Any]:
    def models(m: Any) -> dict[str, Any]:
        return {k: v.to_json() for k, v in m.items()} if m else {}

    return {
        "name": c.name,
        "action": c.kind.value,
        "provider": c.provider,
        "fields": [
            {"path": f.path, "before": f.before, "after": f.after, "impact": f.impact.value}
            for f in c.fields
        ],
        "drift": list(c.drift),
        "routes_before": [r.to_json() for r in c.routes_before],
        "routes_after": [r.to_json() for r in c.routes_after],
        "models_before": models(c.before.models if c.before else None),
        "models_after": models(c.after.models if c.after else None),
        "replicas_to_start": len(c.starts),
        "replicas_to_stop": [h.id for h in c.stops],
        "replicas_to_forget": [h.id for h in c.forgets],
        "capacity": {
            "before": c.capacity_before,
            "after": c.capacity_after,
            "peak": c.capacity_peak,
            "loss": c.capacity_loss or c.kind is Change.DELETE,
        },
    }


def render_json(plan: Plan) -> dict[str, Any]:
    counts = plan.counts()
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "declare_version": __version__,
        "destroy": plan.destroy,
        "changes": [_change_json(c) for c in plan.changes],
        "actions": [action_to_json(a) for a in plan.actions],
        "edges": [list(e) for e in plan.edges],
        "orphans": list(plan.orphans),
        "summary": {**counts, "actions": len(plan.actions)},
    }
