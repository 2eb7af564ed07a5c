"""Whether two model servers answered one request alike: the rows of two answers compared.

Used by the evidence steps of a rollout (replay and shadow): the same request goes to the
entity serving now and to the new one, and the answers are compared row by row. An answer is
MLflow's scoring-server body: `{"predictions": [...]}` (one item per input row), a bare list,
or any other JSON value (one row). Numbers agree within `tolerance` (relative or absolute,
`math.isclose`); strings, booleans and nulls must be equal; lists and objects agree when
every member does. Pure; no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Agreement:
    """How two answers to one request compare: `rows` compared, `differing` of them."""

    rows: int
    differing: int


def rows_of(body: bytes | str) -> list[Any] | None:
    """The predicted rows of an answer body; None when it is not JSON."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and len(data) == 1:
        only = next(iter(data.values()))
        if next(iter(data)) in ("predictions", "outputs"):
            data = only
    if isinstance(data, list):
        return data
    return [data]


def same(a: Any, b: Any, tolerance: float) -> bool:
    """One row (or value) of two answers alike, numbers within `tolerance`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tolerance) for k in a)
    return bool(a == b) and type(a) is type(b)


def compare(serving: bytes | str, candidate: bytes | str, tolerance: float) -> Agreement:
    """Row by row; a candidate answer that is not JSON, or has another number of rows,
    differs in every row of the serving one."""
    a, b = rows_of(serving), rows_of(candidate)
    if a is None:
        return Agreement(0, 0)  # nothing to compare against
    if b is None or len(a) != len(b):
        return Agreement(len(a), len(a))
    return Agreement(len(a), sum(1 for x, y in zip(a, b, strict=True) if not same(x, y, tolerance)))


def total(agreements: Sequence[Agreement]) -> Agreement:
    return Agreement(sum(a.rows for a in agreements), sum(a.differing for a in agreements))


def p99(samples: Sequence[float]) -> float:
    """The 99th percentile (nearest rank) of `samples`; 0.0 when there are none."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(0.99 * len(ordered)) - 1))]
