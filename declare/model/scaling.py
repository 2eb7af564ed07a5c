"""How many replicas a served entity may run, and when the runtime changes the count.

Databricks sizes a served entity by provisioned concurrency: `workload_size` names a range
(Small 4-4, Medium 8-16, Large 16-64 concurrent requests; the lower bound is 0 with
`scale_to_zero_enabled`), or `min_provisioned_concurrency` / `max_provisioned_concurrency`
give it explicitly (multiples of 4, min <= max, max at least 4; not together with
`workload_size`). A replica serves a known concurrency (`replica_concurrency`, a provider
setting; 4 by default, as Databricks counts one replica per 4 units of concurrency), so a
range of concurrency is a range of replicas. declare's own `replicas: N` pins the count.

`AutoscalePolicy` (manifest `autoscaling:`, a declare addition) says how long the runtime
waits: the quiet period before one step down (Databricks scales down every five minutes:
300 s) and the idle period before scaling to zero (Databricks: 30 minutes). Pure values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONCURRENCY_UNIT = 4
WORKLOAD_CONCURRENCY_RANGE: Mapping[str, tuple[int, int]] = {
    "Small": (4, 4),
    "Medium": (8, 16),
    "Large": (16, 64),
}
DEFAULT_REPLICA_CONCURRENCY = 4
DEFAULT_SCALE_DOWN_AFTER_SECONDS = 300.0
DEFAULT_SCALE_TO_ZERO_AFTER_SECONDS = 1800.0
DEFAULT_HOLD_SECONDS = 60.0


@dataclass(frozen=True)
class ReplicaRange:
    """The replicas an entity may run: `low`..`high`; `pinned` when `replicas:` fixed it."""

    low: int
    high: int
    pinned: bool = False

    @property
    def autoscaled(self) -> bool:
        return self.high > self.low

    def clamp(self, count: int) -> int:
        return max(self.low, min(self.high, count))

    def fit(self, count: int) -> int:
        """`count` inside the range (a pinned range is its count, or zero)."""
        if self.pinned:
            return self.high if count > 0 else self.low
        return self.clamp(count)

    def short(self) -> str:
        """'1', '2..4', '0..4'."""
        return str(self.high) if self.low == self.high else f"{self.low}..{self.high}"

    @property
    def initial(self) -> int:
        """What a new entity starts with: the bottom of the range, at least one replica (a
        pinned count in full), so an apply proves it answers before it may go to zero."""
        return self.high if self.pinned else self.clamp(max(1, self.low))

    def describe(self, zero_after: float | None = None) -> str:
        """'1..4 replicas, autoscaled by concurrency; to zero after 30 min' and the like."""
        n = self.high
        if not self.autoscaled:
            return f"{n} replica{'s' if n != 1 else ''}"
        low = max(self.low, 1) if self.low == 0 else self.low
        text = f"{low}..{n} replicas" if low != n else f"{n} replica{'s' if n != 1 else ''}"
        if low != n:
            text += ", autoscaled by concurrency"
        if self.low == 0 and zero_after is not None:
            text += f"; to zero after {_duration(zero_after)}"
        return text


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def concurrency_range(
    workload_size: str,
    min_concurrency: int | None,
    max_concurrency: int | None,
    scale_to_zero: bool,
) -> tuple[int, int]:
    """The provisioned concurrency an entity asks for (validated by `concurrency_problems`)."""
    if max_concurrency is not None:
        low, high = (min_concurrency or 0), max_concurrency
    else:
        low, high = WORKLOAD_CONCURRENCY_RANGE.get(workload_size, (4, 4))
    return (0 if scale_to_zero else low), high


def replica_range(
    concurrency: tuple[int, int],
    pinned: int | None,
    scale_to_zero: bool,
    per_replica: int = DEFAULT_REPLICA_CONCURRENCY,
) -> ReplicaRange:
    if pinned is not None:
        return ReplicaRange(0 if scale_to_zero else pinned, pinned, pinned=True)
    low, high = concurrency
    lo = math.ceil(low / per_replica)
    hi = max(1, math.ceil(high / per_replica))
    if not scale_to_zero:
        lo = max(lo, 1)
    return ReplicaRange(min(lo, hi), hi)


def concurrency_problems(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Databricks' rules for a served entity's explicit concurrency: (field, message) pairs."""
    lo = raw.get("min_provisioned_concurrency")
    hi = raw.get("max_provisioned_concurrency")
    if lo is None and hi is None:
        return []
    out: list[tuple[str, str]] = []
    if raw.get("workload_size") is not None:
        field = "min_provisioned_concurrency" if lo is not None else "max_provisioned_concurrency"
        out.append((field, "cannot be set together with workload_size; give one of them"))
    if hi is None:
        out.append(("max_provisioned_concurrency", "is required with min_provisioned_concurrency"))
    for field, value in (("min_provisioned_concurrency", lo), ("max_provisioned_concurrency", hi)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            out.append((field, f"must be a whole number of at least 0, got {value!r}"))
        elif value % CONCURRENCY_UNIT:
            out.append((field, f"must be a multiple of {CONCURRENCY_UNIT}, got {value}"))
    if isinstance(hi, int) and not isinstance(hi, bool) and hi < CONCURRENCY_UNIT:
        out.append(("max_provisioned_concurrency", f"must be at least {CONCURRENCY_UNIT}"))
    if (
        isinstance(lo, int)
        and isinstance(hi, int)
        and not isinstance(lo, bool)
        and not isinstance(hi, bool)
        and lo > hi
    ):
        out.append(
            (
                "min_provisioned_concurrency",
                f"must not exceed max_provisioned_concurrency ({lo} > {hi})",
            )
        )
    if lo == 0 and not raw.get("scale_to_zero_enabled"):
        out.append(
            (
                "min_provisioned_concurrency",
                "0 needs scale_to_zero_enabled: true (else the entity has no replica)",
            )
        )
    return out


@dataclass(frozen=True)
class AutoscalePolicy:
    """The runtime's timings for one endpoint (manifest `autoscaling:`)."""

    scale_down_after_seconds: float = DEFAULT_SCALE_DOWN_AFTER_SECONDS
    scale_to_zero_after_seconds: float = DEFAULT_SCALE_TO_ZERO_AFTER_SECONDS
    hold_seconds: float = DEFAULT_HOLD_SECONDS  # how long the gateway holds a request for
    # an entity with no ready replica (waking from zero, being replaced) before 503

    def to_json(self) -> dict[str, Any]:
        return {
            "scale_down_after_seconds": self.scale_down_after_seconds,
            "scale_to_zero_after_seconds": self.scale_to_zero_after_seconds,
            "hold_seconds": self.hold_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> AutoscalePolicy:
        data = data or {}
        default = cls()
        return cls(
            scale_down_after_seconds=float(
                data.get("scale_down_after_seconds", default.scale_down_after_seconds)
            ),
            scale_to_zero_after_seconds=float(
                data.get("scale_to_zero_after_seconds", default.scale_to_zero_after_seconds)
            ),
            hold_seconds=float(data.get("hold_seconds", default.hold_seconds)),
        )
