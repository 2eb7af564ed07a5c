"""The plan as a pull-request comment (GitHub-flavoured Markdown), for reviewers.

`render_markdown(plan)` is a third view of the same `Plan` value beside `declare.views.plan`'s human
text and JSON; it is pure (a Plan in, a string out). The comment has, in order:

1. one summary line: endpoints to create, update and destroy, and the number of actions;
2. warnings that stand out (a GitHub `[!WARNING]` alert): an endpoint destroyed, capacity
   lost (fewer replicas in rotation after the change than before), and a model signature that
   changed incompatibly between the old and the new model of an endpoint; drift and orphan
   replicas follow as a `[!NOTE]`;
3. a table of the endpoints that change: action, model versions and traffic, before -> after,
   and replicas in rotation;
4. the full ordered action list, collapsed under `<details>`.

Also here: `signature_problems(old, new)`, the comparison of two MLflow signatures (the JSON
strings `inputs` / `outputs` that MLflow writes to MLmodel) used for the third warning.

Does not post the comment anywhere (examples/ci/ does that) and adds no marker of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from declare.diff import Change, EndpointChange
from declare.model import ResolvedModel, Route
from declare.plan.actions import ActionKind, Plan

_ACTION_WORD = {
    Change.CREATE: "create",
    Change.UPDATE: "update",
    Change.DELETE: "destroy",
}
_ARROW = " → "


# -- signatures ---------------------------------------------------------------------------


def _columns(spec: str | None) -> dict[str, str] | None:
    """Named columns -> type of a column-based MLflow schema; None when not column-based."""
    if not spec:
        return None
    try:
        items = json.loads(spec)
    except (TypeError, ValueError):
        return None
    if not isinstance(items, list) or not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        out[item["name"]] = _type_text(item)
    return out


def _required(spec: str | None) -> set[str]:
    try:
        items = json.loads(spec or "[]")
    except (TypeError, ValueError):
        return set()
    if not isinstance(items, list):
        return set()
    return {
        i["name"]
        for i in items
        if isinstance(i, dict) and isinstance(i.get("name"), str) and i.get("required", True)
    }


def _type_text(item: Mapping[str, Any]) -> str:
    if item.get("type") == "tensor" and isinstance(item.get("tensor-spec"), dict):
        ts = item["tensor-spec"]
        return f"tensor {ts.get('dtype')} {ts.get('shape')}"
    return str(item.get("type"))


def _schema_problems(side: str, old: str | None, new: str | None) -> list[str]:
    if not old or not new or old == new:
        return []
    before, after = _columns(old), _columns(new)
    if before is None or after is None:
        # Tensor-based or unnamed schemas: no column to compare, only the whole.
        if _normalized(old) != _normalized(new):
            return [f"{side} schema changed: {_short(old)}{_ARROW}{_short(new)}"]
        return []
    out = []
    for name, kind in before.items():
        if name not in after:
            out.append(f"{side} column `{name}` removed")
        elif after[name] != kind:
            out.append(f"{side} column `{name}` changed type: {kind}{_ARROW}{after[name]}")
    if side == "input":
        # A new required input: requests written for the old model lack it and fail.
        for name in after:
            if name not in before and name in _required(new):
                out.append(f"input column `{name}` added and required")
    return out


def _normalized(spec: str) -> Any:
    try:
        return json.loads(spec)
    except ValueError:
        return spec


def _short(spec: str, limit: int = 80) -> str:
    text = json.dumps(_normalized(spec), separators=(",", ":"))
    return f"`{text if len(text) <= limit else text[: limit - 1] + '…'}`"


def signature_problems(old: ResolvedModel, new: ResolvedModel) -> list[str]:
    """What changed incompatibly from `old`'s signature to `new`'s; empty when compatible.

    Incompatible: an input column removed or retyped, a required input column added, an output
    column removed or retyped, a tensor schema changed. Models without a signature on either
    side cannot be compared and give no problem.
    """
    if not old.signature or not new.signature:
        return []
    out: list[str] = []
    for key, side in (("inputs", "input"), ("outputs", "output")):
        out += _schema_problems(side, old.signature.get(key), new.signature.get(key))
    return out


# -- per-endpoint facts -------------------------------------------------------------------


def _models_text(models: Iterable[ResolvedModel]) -> str:
    return ", ".join(dict.fromkeys(m.describe() for m in models)) or "none"


def _before_models(c: EndpointChange) -> list[ResolvedModel]:
    if c.before is None or c.before.spec is None:
        return []
    return [c.before.models[e.name] for e in c.before.spec.entities if e.name in c.before.models]


def _after_models(c: EndpointChange) -> list[ResolvedModel]:
    if c.after is None:
        return []
    return [c.after.models[e.name] for e in c.after.spec.entities if e.name in c.after.models]


def _routes_text(routes: Sequence[Route]) -> str:
    return ", ".join(f"{r.served_entity_name} {r.traffic_percentage}%" for r in routes) or "none"


def _change_text(before: str, after: str, kind: Change) -> str:
    if kind is Change.CREATE:
        return after
    if kind is Change.DELETE:
        return f"{before}{_ARROW}none"
    return before if before == after else f"{before}{_ARROW}{after}"


def _rollout_text(plan: Plan, c: EndpointChange) -> str | None:
    """`canary 10% → 50% → 100%, bake 60s` when the change shifts traffic in steps."""
    if c.after is None or not any(
        a.kind in (ActionKind.SHIFT_TRAFFIC, ActionKind.BAKE) for a in plan.actions_of(c.name)
    ):
        return None
    policy = c.after.spec.rollout
    text = f"{policy.strategy} " + _ARROW.join(f"{p}%" for p in policy.steps)
    if policy.bakes:
        text += f", bake {policy.bake_seconds:g}s per step"
    return text


def _signature_warnings(c: EndpointChange) -> list[str]:
    olds = {m.pinned_uri: m for m in _before_models(c)}
    news = {m.pinned_uri: m for m in _after_models(c)}
    out = []
    for uri, new in news.items():
        if uri in olds:
            continue
        gone = [m for u, m in olds.items() if u not in news]
        same_name = [m for m in gone if m.name is not None and m.name == new.name]
        for old in same_name or gone:
            problems = signature_problems(old, new)
            if problems:
                out.append(
                    f"**Incompatible signature** in `{c.name}`: {old.describe()}{_ARROW}"
                    f"{new.describe()}: {'; '.join(problems)}."
                )
    return out


def warnings_of(plan: Plan) -> list[str]:
    """The reviewer warnings of a plan, one Markdown sentence each, in endpoint order."""
    out: list[str] = []
    for c in plan.changes:
        if c.kind is Change.DELETE:
            n = c.capacity_before
            out.append(
                f"**Destroy**: endpoint `{c.name}` will be destroyed: {_plural(n, 'replica')} "
                "in rotation stop and its invocation URL stops answering."
            )
        elif c.kind is Change.UPDATE:
            before, after = c.capacity_before, c.capacity_after
            if c.capacity_loss:
                out.append(
                    f"**Capacity loss**: endpoint `{c.name}` goes from {_plural(before, 'replica')}"
                    f" in rotation to {after}."
                )
        if c.kind in (Change.UPDATE, Change.CREATE):
            out += _signature_warnings(c)
    return out


def _notes(plan: Plan) -> list[str]:
    out = [f"Drift in `{c.name}`: {d}." for c in plan.changes for d in c.drift]
    if plan.orphans:
        out.append(
            f"{_plural(len(plan.orphans), 'orphan replica')} running under this project's labels"
            f" that no state knows will be stopped: {', '.join(plan.orphans)}."
        )
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# -- rendering ----------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def summary_line(plan: Plan) -> str:
    counts = plan.counts()
    n = len(plan.actions)
    verb = "destroy" if plan.destroy else "plan"
    return (
        f"**declare {verb}:** {counts['add']} to create, {counts['change']} to update, "
        f"{counts['destroy']} to destroy; {_plural(n, 'action')}."
    )


def _table(plan: Plan) -> list[str]:
    rows = [
        "| Endpoint | Action | Model versions | Traffic | Replicas in rotation |",
        "|---|---|---|---|---|",
    ]
    for c in plan.changes:
        if c.kind is Change.NOOP:
            continue
        models = _change_text(
            _models_text(_before_models(c)), _models_text(_after_models(c)), c.kind
        )
        traffic = _change_text(_routes_text(c.routes_before), _routes_text(c.routes_after), c.kind)
        rollout = _rollout_text(plan, c)
        if rollout:
            traffic += f" ({rollout})"
        before, after = c.capacity_before, c.capacity_after
        replicas = str(after) if c.kind is Change.CREATE else f"{before}{_ARROW}{after}"
        if c.kind is Change.UPDATE and before == after:
            replicas = str(after)
        cells = [f"`{c.name}`", _ACTION_WORD[c.kind], models, traffic, replicas]
        rows.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return rows


def render_markdown(plan: Plan) -> str:
    """The plan as one Markdown comment (see the module docstring for its parts)."""
    if not plan.has_changes:
        return "**declare plan:** no changes. The endpoints match the manifests and what runs.\n"
    out = [summary_line(plan), ""]
    warnings = warnings_of(plan)
    if warnings:
        out.append("> [!WARNING]")
        for i, w in enumerate(warnings):
            if i:
                out.append(">")
            out.append(f"> {w}")
        out.append("")
    notes = _notes(plan)
    if notes:
        out.append("> [!NOTE]")
        for i, n in enumerate(notes):
            if i:
                out.append(">")
            out.append(f"> {n}")
        out.append("")
    if any(c.kind is not Change.NOOP for c in plan.changes):
        out += _table(plan)
        out.append("")
    out += [
        "<details>",
        f"<summary>All {_plural(len(plan.actions), 'action')}, in order "
        "(each waits for those it depends on)</summary>",
        "",
        "```text",
    ]
    for i, a in enumerate(plan.actions, 1):
        out.append(f"{i:>3}. {a.kind.symbol} {a.summary}")
    out += ["```", "", "</details>"]
    return "\n".join(out) + "\n"
