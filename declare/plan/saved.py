"""Saved plans: `declare plan --out FILE` writes one, `declare apply FILE` executes it exactly.

A saved plan (`PlanFile`) is a JSON document holding the whole Plan (changes with their
before/after values, actions with payloads, edges; encoded by `declare.plan.codec`), the
lineage and serial of the state it was made from, and what the refresh observed (replica
liveness, orphans, the gateway and its routing, builds and their cache state).
`stale_reasons()` compares a saved plan with the state and what runs now and says, one line
each, what moved on; apply refuses a stale plan.

No secret value is ever in a plan: environment variables hold `{{secrets/...}}` references,
and MLflow connection settings are added at apply time. Pure except for `write`/`read`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from declare import __version__
from declare.diff import Actual
from declare.errors import ConfigError
from declare.plan.actions import Plan
from declare.plan.codec import action_from_json, action_to_json, change_from_json, change_to_json
from declare.provider import BuildInfo
from declare.state.document import State

FORMAT = "declare-plan"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PlanFile:
    plan: Plan
    project: str
    lineage: str
    serial: int
    observed: Mapping[str, Any]
    created_at: str = ""


# -- what a refresh saw -------------------------------------------------------------------


def observe(actual: Actual, builds: Mapping[str, BuildInfo]) -> dict[str, Any]:
    """The parts of the world a plan depends on, as comparable JSON."""
    table = actual.gateway_table
    routing = {}
    if table is not None:
        routing = {
            name: {
                "routes": [[k, p] for k, p in ep.routes],
                "replicas": {k: sorted(t.id for t in v) for k, v in sorted(ep.entities.items())},
            }
            for name, ep in sorted(table.endpoints.items())
        }
    return {
        "replicas": {rid: s.liveness.value for rid, s in sorted(actual.replicas.items())},
        "orphans": sorted(h.id for h in actual.orphans),
        "gateway": {
            "running": actual.gateway_running,
            "settings": actual.gateway_settings_hash,
            "routing": routing,
        },
        "builds": {
            gen: {"key": b.key, "needed": b.needed, "cached": b.cached, "ref": b.ref}
            for gen, b in sorted(builds.items())
        },
    }


def stale_reasons(saved: PlanFile, state: State, now: Mapping[str, Any]) -> list[str]:
    """Why the saved plan no longer fits (empty when it still does)."""
    out = []
    if saved.lineage and state.lineage and saved.lineage != state.lineage:
        out.append(f"the state's lineage is {state.lineage}, the plan was made for {saved.lineage}")
    if state.serial != saved.serial:
        out.append(
            f"the state moved on: serial {saved.serial} when planned, {state.serial} now "
            "(another apply ran since)"
        )
    before, after = saved.observed, now
    for rid in sorted(set(before.get("replicas", {})) | set(after.get("replicas", {}))):
        b = before.get("replicas", {}).get(rid, "unknown")
        a = after.get("replicas", {}).get(rid, "unknown")
        if b != a:
            out.append(f"replica {rid} was {b} when planned, is {a} now")
    b_orph, a_orph = set(before.get("orphans", [])), set(after.get("orphans", []))
    for rid in sorted(a_orph - b_orph):
        out.append(f"replica {rid} now runs under this project's labels, unknown to the state")
    for rid in sorted(b_orph - a_orph):
        out.append(f"orphan replica {rid} seen when planned is gone")
    bg, ag = before.get("gateway", {}), after.get("gateway", {})
    if bg.get("running") != ag.get("running"):
        was = "running" if bg.get("running") else "not running"
        now_ = "running" if ag.get("running") else "not running"
        out.append(f"the gateway was {was} when planned, is {now_} now")
    elif bg.get("settings") != ag.get("settings"):
        out.append("the gateway's settings (declare.yaml, auth token) changed")
    elif bg.get("routing") != ag.get("routing"):
        names = sorted(
            n
            for n in set(bg.get("routing", {})) | set(ag.get("routing", {}))
            if bg.get("routing", {}).get(n) != ag.get("routing", {}).get(n)
        )
        out.append(f"the gateway routes {', '.join(names)} differently than when planned")
    bb, ab = before.get("builds", {}), after.get("builds", {})
    for gen in sorted(set(bb) & set(ab)):
        if bb[gen] != ab[gen]:
            out.append(
                f"build {bb[gen].get('ref') or bb[gen].get('key')}: "
                f"{_build_word(bb[gen])} when planned, {_build_word(ab[gen])} now"
            )
    return out


def _build_word(b: Mapping[str, Any]) -> str:
    if not b.get("needed"):
        return "not needed"
    return f"{'cached' if b.get('cached') else 'not built'} ({b.get('ref') or b.get('key')})"


# -- the file ---------------------------------------------------------------------------


def to_json(saved: PlanFile) -> dict[str, Any]:
    p = saved.plan
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "declare_version": __version__,
        "created_at": saved.created_at,
        "project": saved.project,
        "state": {"lineage": saved.lineage, "serial": saved.serial},
        "observed": dict(saved.observed),
        "destroy": p.destroy,
        "changes": [change_to_json(c) for c in p.changes],
        "actions": [action_to_json(a) for a in p.actions],
        "edges": [list(e) for e in p.edges],
        "orphans": list(p.orphans),
    }


def from_json(data: Any, where: str) -> PlanFile:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{where} is not a saved declare plan (made by `declare plan --out`)")
    if data.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{where}: saved plan format {data.get('format_version')} is not the one this "
            f"declare ({__version__}) reads ({FORMAT_VERSION}); plan again"
        )
    try:
        plan = Plan(
            changes=tuple(change_from_json(c) for c in data["changes"]),
            actions=tuple(action_from_json(a) for a in data["actions"]),
            edges=tuple((str(a), str(b)) for a, b in data["edges"]),
            orphans=tuple(data.get("orphans", [])),
            destroy=bool(data.get("destroy")),
        )
        return PlanFile(
            plan=plan,
            project=str(data["project"]),
            lineage=str(data["state"]["lineage"]),
            serial=int(data["state"]["serial"]),
            observed=data["observed"],
            created_at=str(data.get("created_at", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: the saved plan is damaged ({exc!r}); plan again") from None


def write(saved: PlanFile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(to_json(saved), f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read(path: Path) -> PlanFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the saved plan {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError(
            f"{path} is not a saved declare plan (made by `declare plan --out`)"
        ) from None
    return from_json(data, str(path))
