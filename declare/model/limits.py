"""Endpoint rate limits, as Databricks' `rate_limits`: at most `calls` requests per renewal
period, counted for the whole endpoint (`key: endpoint`) or per caller (`key: user`).

`RateLimit` is the value an `EndpointSpec` carries and the routing table sends to the
gateway (which only counts: `declare.gateway.limits.RateLimiter`). `manifest_limits` reads
them out of a manifest once, at load: every entry of the top-level `rate_limits`, and the
entries of `ai_gateway.rate_limits` whose key is `endpoint` or `user`, that name no principal
and that limit `calls` (user-group, service-principal and token limits need identities or
counts the gateway does not have: they are recorded, not enforced). Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PERIODS = {"minute": 60, "hour": 3600}
KEYS = ("endpoint", "user")

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class RateLimit:
    calls: int
    key: str = "endpoint"
    renewal_period: str = "minute"

    @property
    def period_seconds(self) -> int:
        return PERIODS[self.renewal_period]

    def describe(self) -> str:
        return f"{self.calls} calls per {self.renewal_period} ({self.key})"

    def to_json(self) -> dict[str, Any]:
        return {"calls": self.calls, "key": self.key, "renewal_period": self.renewal_period}

    @classmethod
    def from_json(cls, data: Any) -> RateLimit:
        """Parse one limit; LimitError naming the field and saying what is wrong."""
        if not isinstance(data, Mapping):
            raise LimitError(None, "a rate limit must be an object")
        calls = data.get("calls")
        if isinstance(calls, float) and calls.is_integer():
            calls = int(calls)
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise LimitError("calls", f"calls must be a whole number of at least 0, got {calls!r}")
        key = data.get("key") or "endpoint"
        if key not in KEYS:
            raise LimitError("key", f"key must be one of {', '.join(KEYS)}, got {key!r}")
        period = data.get("renewal_period") or "minute"
        if period not in PERIODS:
            raise LimitError(
                "renewal_period",
                f"renewal_period must be one of {', '.join(PERIODS)}, got {period!r}",
            )
        return cls(calls=calls, key=str(key), renewal_period=str(period))


class LimitError(ValueError):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ManifestLimits:
    """The limits of one manifest: top-level `rate_limits`, the enforced entries of
    `ai_gateway.rate_limits`, and (field path, message) for each invalid enforced entry."""

    top: tuple[RateLimit, ...] = ()
    ai_gateway: tuple[RateLimit, ...] = ()
    problems: tuple[tuple[FieldPath, str], ...] = field(default=(), compare=False)


def manifest_limits(value: Mapping[str, Any]) -> ManifestLimits:
    """Read the enforced limits of a manifest (or of a legacy recorded `extra`).

    An invalid entry is left out of the limits and reported in `problems`; the JSON Schema
    checks the top-level entries too, so manifests report each problem of `ai_gateway` here.
    """
    top: list[RateLimit] = []
    nested: list[RateLimit] = []
    problems: list[tuple[FieldPath, str]] = []
    for path, entry in _enforced_entries(value):
        try:
            limit = RateLimit.from_json(entry)
        except LimitError as exc:
            problems.append(((*path, exc.field) if exc.field else path, str(exc)))
            continue
        (top if path[0] == "rate_limits" else nested).append(limit)
    return ManifestLimits(tuple(top), tuple(nested), tuple(problems))


def _enforced_entries(value: Mapping[str, Any]) -> list[tuple[FieldPath, Any]]:
    out: list[tuple[FieldPath, Any]] = []
    top = value.get("rate_limits")
    if isinstance(top, list):
        out += [(("rate_limits", i), entry) for i, entry in enumerate(top)]
    ai_gateway = value.get("ai_gateway")
    nested = ai_gateway.get("rate_limits") if isinstance(ai_gateway, Mapping) else None
    if isinstance(nested, list):
        for i, entry in enumerate(nested):
            if not isinstance(entry, Mapping) or entry.get("calls") is None:
                continue
            if entry.get("key", "endpoint") not in KEYS or entry.get("principal") is not None:
                continue
            out.append((("ai_gateway", "rate_limits", i), entry))
    return out


def limits_from_json(data: Any) -> tuple[RateLimit, ...]:
    """Recorded limits (a list of RateLimit JSON); an invalid entry is left out."""
    out: list[RateLimit] = []
    for entry in data if isinstance(data, list) else []:
        try:
            out.append(RateLimit.from_json(entry))
        except LimitError:
            continue
    return tuple(out)
