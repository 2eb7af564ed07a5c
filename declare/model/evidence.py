"""Evidence before users see a version: the rollout's `replay` and `shadow` steps and their
verdict.

`rollout.replay` sends the endpoint's last captured requests (its inference table) to each
new served entity and to the one serving now, before any traffic moves; `rollout.shadow`
mirrors a share of live requests to the new entity for a while, users answered only by the
serving one. Both are judged by the same `Bounds` over `Evidence`: errors of the candidate
where the serving entity answered, the share of differing predicted rows (numbers within
`tolerance`, `declare.model.agreement`), and the candidate's p99 latency over the serving
one's. A tripped bound rolls the change back.

Values and the pure verdict (`verdict`) only; reading tables and sending requests is
`declare.evidence`'s, mirroring the gateway's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

REFUSE = "refuse"
SKIP = "skip"


@dataclass(frozen=True)
class Bounds:
    """When the evidence says no: each bound None is not judged."""

    max_disagreement: float | None = 0.0  # share of predicted rows that differ
    tolerance: float = 1e-6  # numbers agree within this, relative or absolute
    max_error_rate: float | None = 0.0  # share of requests the candidate failed
    max_p99_ratio: float | None = None  # candidate p99 / serving p99

    def describe(self) -> str:
        parts = []
        if self.max_disagreement is not None:
            parts.append(f"disagreement > {self.max_disagreement:g} (tolerance {self.tolerance:g})")
        if self.max_error_rate is not None:
            parts.append(f"error rate > {self.max_error_rate:g}")
        if self.max_p99_ratio is not None:
            parts.append(f"p99 > {self.max_p99_ratio:g}x the serving entity's")
        return " or ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_disagreement": self.max_disagreement,
            "tolerance": self.tolerance,
            "max_error_rate": self.max_error_rate,
            "max_p99_ratio": self.max_p99_ratio,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Bounds:
        d = cls()
        return cls(
            max_disagreement=_optional(data, "max_disagreement", d.max_disagreement),
            tolerance=float(data.get("tolerance", d.tolerance)),
            max_error_rate=_optional(data, "max_error_rate", d.max_error_rate),
            max_p99_ratio=_optional(data, "max_p99_ratio", d.max_p99_ratio),
        )


def _optional(data: Mapping[str, Any], key: str, default: float | None) -> float | None:
    if key not in data:
        return default
    value = data[key]
    return None if value is None else float(value)


@dataclass(frozen=True)
class ReplayPolicy:
    """`rollout.replay`: the last `requests` captured requests answered 200, replayed; fewer
    than `min_requests` in the table refuses the plan (`when_insufficient: refuse`) or skips
    the step with a warning (`skip`)."""

    requests: int = 100
    min_requests: int = 20
    when_insufficient: str = REFUSE
    bounds: Bounds = field(default_factory=Bounds)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "min_requests": self.min_requests,
            "when_insufficient": self.when_insufficient,
            **self.bounds.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayPolicy:
        requests = int(data.get("requests", 100))
        return cls(
            requests=requests,
            min_requests=int(data.get("min_requests", min(20, requests))),
            when_insufficient=str(data.get("when_insufficient", REFUSE)),
            bounds=Bounds.from_json(data),
        )


@dataclass(frozen=True)
class ShadowPolicy:
    """`rollout.shadow`: `percent` of live requests mirrored to the new entity for
    `seconds`; judged once `min_requests` mirrors answered (and at the end)."""

    percent: int = 100
    seconds: float = 60.0
    min_requests: int = 20
    bounds: Bounds = field(default_factory=Bounds)

    def to_json(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "seconds": self.seconds,
            "min_requests": self.min_requests,
            **self.bounds.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShadowPolicy:
        return cls(
            percent=int(data.get("percent", 100)),
            seconds=float(data.get("seconds", 60.0)),
            min_requests=int(data.get("min_requests", 20)),
            bounds=Bounds.from_json(data),
        )


@dataclass(frozen=True)
class Evidence:
    """What one candidate entity did with the requests it was given, beside the serving one."""

    requests: int = 0
    errors: int = 0  # the candidate failed where the serving entity answered
    rows: int = 0  # predicted rows compared (both answered 2xx)
    differing: int = 0
    p99_ms: float = 0.0
    serving_p99_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def disagreement(self) -> float:
        return self.differing / self.rows if self.rows else 0.0

    @property
    def p99_ratio(self) -> float:
        return self.p99_ms / self.serving_p99_ms if self.serving_p99_ms > 0 else 0.0

    def describe(self) -> str:
        return (
            f"{self.requests} requests, {self.errors} errors, {self.differing} of {self.rows} "
            f"rows differ ({self.disagreement:.1%}), p99 {self.p99_ms:.1f} ms vs "
            f"{self.serving_p99_ms:.1f} ms serving"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "rows": self.rows,
            "differing": self.differing,
            "disagreement": self.disagreement,
            "p99_ms": self.p99_ms,
            "serving_p99_ms": self.serving_p99_ms,
        }


def verdict(bounds: Bounds, entity: str, e: Evidence) -> str:
    """Why `e` trips a bound ('' when it does not)."""
    if bounds.max_error_rate is not None and e.error_rate > bounds.max_error_rate:
        return (
            f"{entity} failed {e.errors} of {e.requests} requests the serving entity answered "
            f"(error rate {e.error_rate:.3f} > max_error_rate {bounds.max_error_rate:g})"
        )
    if bounds.max_disagreement is not None and e.disagreement > bounds.max_disagreement:
        return (
            f"{entity} answered {e.differing} of {e.rows} rows differently from the serving "
            f"entity (disagreement {e.disagreement:.3f} > max_disagreement "
            f"{bounds.max_disagreement:g}, tolerance {bounds.tolerance:g})"
        )
    if bounds.max_p99_ratio is not None and e.p99_ratio > bounds.max_p99_ratio:
        return (
            f"{entity} p99 {e.p99_ms:.1f} ms is {e.p99_ratio:.2f}x the serving entity's "
            f"{e.serving_p99_ms:.1f} ms (> max_p99_ratio {bounds.max_p99_ratio:g})"
        )
    return ""
