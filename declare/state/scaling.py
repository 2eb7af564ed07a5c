"""What the runtime records of a served entity between applies: the replicas it runs for
now and why, how its replacements fare, and the recent decisions of an endpoint.

Values of the state document (`declare.state.document` embeds them in an endpoint's
record) with their JSON form; pure, no I/O.

    "scale": {"<entity>": {"target": 2, "generation": "...", "reason": "scale up: ...",
              "at": 1733..., "zero_since": null, "failures": 0, "backoff_until": null,
              "last_failure": ""}},
    "events": [{"at": 1733..., "entity": "iris-1", "kind": "scale", "detail": "..."}]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

EVENTS_KEPT = 20  # the decisions an endpoint's record keeps, newest last


@dataclass(frozen=True)
class EntityScale:
    """The count the runtime keeps an entity at (for one generation), and its crash loop."""

    target: int
    generation: str
    reason: str = ""
    at: float = 0.0  # unix seconds of the decision
    zero_since: float | None = None  # scaled to zero since (unix seconds)
    failures: int = 0  # replacements that failed (died soon, or never became ready) in a row
    backoff_until: float | None = None  # no replacement is tried before this (unix seconds)
    last_failure: str = ""

    def backing_off(self, now: float) -> bool:
        return self.backoff_until is not None and now < self.backoff_until

    @property
    def scaled_to_zero(self) -> bool:
        return self.target == 0

    def crash_text(self, now: float | None = None) -> str:
        """'crash loop: 3 failures in a row; next attempt in 12 s; last: ...' (with `now`;
        without it the next attempt's time as UTC)."""
        n = self.failures
        text = f"crash loop: {n} failure{'s' if n != 1 else ''} in a row"
        if self.backoff_until is not None:
            if now is not None:
                if now < self.backoff_until:
                    text += f"; next attempt in {self.backoff_until - now:.0f} s"
            else:
                text += f"; next attempt at {_utc(self.backoff_until)}"
        if self.last_failure:
            text += f"; last: {self.last_failure.splitlines()[0]}"
        return text

    def with_target(self, target: int, reason: str, now: float) -> EntityScale:
        zero_since = (self.zero_since or now) if target == 0 else None
        return replace(self, target=target, reason=reason, at=now, zero_since=zero_since)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "generation": self.generation,
            "reason": self.reason,
            "at": self.at,
            "zero_since": self.zero_since,
            "failures": self.failures,
            "backoff_until": self.backoff_until,
            "last_failure": self.last_failure,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EntityScale:
        zero = data.get("zero_since")
        until = data.get("backoff_until")
        return cls(
            target=int(data["target"]),
            generation=str(data.get("generation", "")),
            reason=str(data.get("reason", "")),
            at=float(data.get("at", 0.0)),
            zero_since=float(zero) if zero is not None else None,
            failures=int(data.get("failures", 0)),
            backoff_until=float(until) if until is not None else None,
            last_failure=str(data.get("last_failure", "")),
        )


@dataclass(frozen=True)
class ScaleEvent:
    """One decision of the runtime: scale, replace, back off, scale to zero, wake."""

    at: float
    entity: str
    kind: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "entity": self.entity, "kind": self.kind, "detail": self.detail}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScaleEvent:
        return cls(
            float(data["at"]), str(data["entity"]), str(data["kind"]), str(data["detail"])
        )


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc(t: float) -> str:
    """Unix seconds as ISO 8601 UTC ('2026-12-03T10:00:00Z')."""
    return _utc(t)


def kept_events(events: tuple[ScaleEvent, ...], new: ScaleEvent) -> tuple[ScaleEvent, ...]:
    return (*events, new)[-EVENTS_KEPT:]
