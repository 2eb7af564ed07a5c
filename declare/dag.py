"""A generic DAG walker: run a function on every node in dependency order, N at a time.

Knows no declare concept (Terraform's `dag` package). A node runs once all its predecessors
succeeded; a node whose predecessor failed or was skipped is skipped; `skip(node)` lets the
caller skip more (e.g. the rest of a failed endpoint). Threads, not processes: node functions
wait on I/O (processes starting, HTTP). A node that raises a BaseException which is not an
Exception (KeyboardInterrupt, SystemExit) aborts the walk: nothing more starts, the nodes
running finish, and that exception is raised from `walk`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum

import networkx as nx


class Outcome(Enum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class WalkResult:
    outcomes: dict[Hashable, Outcome] = field(default_factory=dict)
    errors: dict[Hashable, BaseException] = field(default_factory=dict)
    order: list[Hashable] = field(default_factory=list)  # nodes in the order they finished

    @property
    def ok(self) -> bool:
        return all(o is Outcome.OK for o in self.outcomes.values())


def walk(
    graph: nx.DiGraph,
    fn: Callable[[Hashable], None],
    parallelism: int = 10,
    skip: Callable[[Hashable], bool] | None = None,
    priority: Callable[[Hashable], int] | None = None,
) -> WalkResult:
    """Run `fn(node)` for each node once its predecessors succeeded; return what happened.

    `priority` orders nodes that are ready at the same time (lower first).
    """
    if not nx.is_directed_acyclic_graph(graph):
        raise ValueError("graph has a cycle")
    result = WalkResult()
    remaining = {n: graph.in_degree(n) for n in graph.nodes}
    blocked: set[Hashable] = set()
    ready = [n for n, deg in remaining.items() if deg == 0]
    running: dict[Future[None], Hashable] = {}
    prio = priority or (lambda n: 0)
    abort: BaseException | None = None

    def finish(node: Hashable, outcome: Outcome) -> None:
        result.outcomes[node] = outcome
        result.order.append(node)
        for succ in graph.successors(node):
            if outcome is not Outcome.OK:
                blocked.add(succ)
            remaining[succ] -= 1
            if remaining[succ] == 0:
                ready.append(succ)

    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        while (ready and abort is None) or running:
            ready.sort(key=prio)
            while ready and abort is None and len(running) < max(1, parallelism):
                node = ready.pop(0)
                if node in blocked or (skip is not None and skip(node)):
                    finish(node, Outcome.SKIPPED)
                    continue
                running[pool.submit(fn, node)] = node
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                node = running.pop(fut)
                exc = fut.exception()
                if exc is None:
                    finish(node, Outcome.OK)
                elif not isinstance(exc, Exception):
                    abort = abort or exc
                    result.errors[node] = exc
                    finish(node, Outcome.FAILED)
                else:
                    result.errors[node] = exc
                    finish(node, Outcome.FAILED)
    if abort is not None:
        raise abort
    return result
