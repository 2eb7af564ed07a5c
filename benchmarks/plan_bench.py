"""How long the pure planning stages take for many endpoints (diff + DAG + renderings).

Baseline in the same run: planning N endpoints where nothing changed; against it, planning a
version change of every endpoint (start, await, switch, drain, stop per endpoint). No I/O:
the values are built in memory like tests/unit/planning_fixtures.py does.

    .venv/bin/python benchmarks/plan_bench.py [N]
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

from declare.diff import Actual, diff
from declare.plan import GatewayInput, PlanInput, build_plan
from declare.routing import routing_table
from declare.state.document import State
from declare.views.plan import render_human, render_json
from tests.unit.planning_fixtures import applied, desired


def world(n: int, version: str) -> tuple[list, State, Actual]:  # type: ignore[type-arg]
    wanted, endpoints, replicas = [], {}, {}
    for i in range(n):
        name = f"ep{i}"
        d = desired(("1", 100))
        d = replace(d, spec=replace(d.spec, name=name))
        state, actual = applied(d)
        rec = replace(state.endpoints["iris"], name=name)
        rec = replace(
            rec,
            replicas=tuple(
                replace(r, handle=replace(r.handle, id=f"{name}-{r.id}", endpoint=name))
                for r in rec.replicas
            ),
        )
        endpoints[name] = rec
        for r in rec.replicas:
            replicas[r.id] = replace(next(iter(actual.replicas.values())), handle=r.handle)
        target = desired((version, 100))
        wanted.append(replace(target, spec=replace(target.spec, name=name)))
    state = State(serial=1, lineage="l", endpoints=endpoints)
    actual = Actual(
        replicas=replicas,
        gateway_running=True,
        gateway_settings_hash="gw",
        gateway_table=routing_table(state, 1),
    )
    return wanted, state, actual


def plan_once(wanted: list, state: State, actual: Actual) -> tuple[float, int]:  # type: ignore[type-arg]
    t0 = time.perf_counter()
    changes = diff(wanted, state, actual, "gw")
    plan = build_plan(PlanInput("p", changes, GatewayInput(True, "127.0.0.1", 8787, "gw", "gw")))
    render_human(plan)
    render_json(plan)
    return time.perf_counter() - t0, len(plan.actions)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    same = world(n, "1")
    changed = world(n, "2")
    base = min(plan_once(*same)[0] for _ in range(3))
    runs = [plan_once(*changed) for _ in range(3)]
    t, actions = min(runs)
    print(f"{n} endpoints, nothing changed:      {base * 1000:8.1f} ms (baseline)")
    print(f"{n} endpoints, every version changes: {t * 1000:8.1f} ms, {actions} actions")
    print(f"ratio: {t / base:.1f}x the no-change plan; {t / n * 1e6:.0f} us per changed endpoint")


if __name__ == "__main__":
    main()
