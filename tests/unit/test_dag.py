"""The generic DAG walker: order, parallelism, failure propagation, skipping."""

from __future__ import annotations

import threading
import time

import networkx as nx
import pytest

from declare.dag import Outcome, walk


def test_runs_in_dependency_order() -> None:
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("a", "d")])
    seen: list[str] = []
    result = walk(g, lambda n: seen.append(str(n)), parallelism=1)
    assert result.ok
    assert seen.index("a") < seen.index("b") < seen.index("c")
    assert seen.index("a") < seen.index("d")


def test_failure_skips_dependents_only() -> None:
    g = nx.DiGraph([("a", "b"), ("c", "d")])

    def fn(n: object) -> None:
        if n == "a":
            raise RuntimeError("boom")

    result = walk(g, fn)
    assert result.outcomes == {
        "a": Outcome.FAILED,
        "b": Outcome.SKIPPED,
        "c": Outcome.OK,
        "d": Outcome.OK,
    }
    assert str(result.errors["a"]) == "boom"


def test_parallelism_bounds_concurrency() -> None:
    g = nx.DiGraph()
    g.add_nodes_from(range(8))
    running = 0
    peak = 0
    lock = threading.Lock()

    def fn(n: object) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    walk(g, fn, parallelism=3)
    assert peak == 3


def test_skip_hook() -> None:
    g = nx.DiGraph([("a", "b")])
    result = walk(g, lambda n: None, skip=lambda n: n == "a")
    assert result.outcomes == {"a": Outcome.SKIPPED, "b": Outcome.SKIPPED}


def test_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        walk(nx.DiGraph([("a", "b"), ("b", "a")]), lambda n: None)
