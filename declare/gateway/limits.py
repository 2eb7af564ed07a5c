"""Endpoint rate limits, as Databricks' `rate_limits`: at most `calls` requests per renewal
period, counted for the whole endpoint (`key: endpoint`) or per caller (`key: user`).

`RateLimit` is the value carried in the routing table. `RateLimiter` keeps fixed-window
counters (Databricks: "counters reset every minute"): a request is admitted only when every
limit of its endpoint has room, and then counts against all of them; a refused request counts
against none and is told how long until the window that refused it resets.

The gateway knows one caller identity per request: its bearer token when auth is configured
(then exactly one), or anonymous. So a `user` limit counts per token, which is per endpoint
until the gateway learns several principals. No I/O; the clock is passed in for tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PERIODS = {"minute": 60, "hour": 3600}
KEYS = ("endpoint", "user")


@dataclass(frozen=True)
class RateLimit:
    calls: int
    key: str = "endpoint"
    renewal_period: str = "minute"

    @property
    def period_seconds(self) -> int:
        return PERIODS[self.renewal_period]

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


def enforced_limits(extra: Mapping[str, Any]) -> tuple[RateLimit, ...]:
    """The limits the gateway enforces for an endpoint, from its manifest's Databricks fields:
    every entry of `rate_limits`, and the entries of `ai_gateway.rate_limits` whose key is
    `endpoint` or `user`, that name no principal and that limit `calls` (user-group,
    service-principal and token limits need identities or counts the gateway does not have:
    they are recorded, not enforced). An invalid entry is left out: manifests report it
    (`limit_problems`), so only a state recorded by an older declare can hold one."""
    out: list[RateLimit] = []
    for _, entry in _enforced_entries(extra):
        try:
            out.append(RateLimit.from_json(entry))
        except LimitError:
            continue
    return tuple(out)


def limit_problems(extra: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """(field path, message) of each enforced `ai_gateway.rate_limits` entry that is not a
    valid limit (the JSON Schema checks the entries of `rate_limits` itself)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for path, entry in _enforced_entries(extra):
        if path[0] != "ai_gateway":
            continue
        try:
            RateLimit.from_json(entry)
        except LimitError as exc:
            out.append(((*path, exc.field) if exc.field else path, str(exc)))
    return out


def _enforced_entries(extra: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], Any]]:
    out: list[tuple[tuple[str | int, ...], Any]] = []
    top = extra.get("rate_limits")
    if isinstance(top, list):
        out += [(("rate_limits", i), entry) for i, entry in enumerate(top)]
    ai_gateway = extra.get("ai_gateway")
    nested = ai_gateway.get("rate_limits") if isinstance(ai_gateway, Mapping) else None
    if isinstance(nested, list):
        for i, entry in enumerate(nested):
            if not isinstance(entry, Mapping) or entry.get("calls") is None:
                continue
            if entry.get("key", "endpoint") not in KEYS or entry.get("principal") is not None:
                continue
            out.append((("ai_gateway", "rate_limits", i), entry))
    return out


class RateLimiter:
    """Fixed-window request counters per (endpoint, limit key, period, caller)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (endpoint, key, period, caller) -> (window index, requests counted in it)
        self._counts: dict[tuple[str, str, int, str], tuple[int, int]] = {}

    def admit(self, endpoint: str, limits: Sequence[RateLimit], caller: str) -> float | None:
        """None when the request may pass (and it is counted); otherwise the seconds until
        the refusing window resets (for Retry-After)."""
        if not limits:
            return None
        now = self._clock()
        slots: list[tuple[tuple[str, str, int, str], int, int]] = []
        wait = 0.0
        for limit in limits:
            period = limit.period_seconds
            counter = (endpoint, limit.key, period, caller if limit.key == "user" else "")
            window = math.floor(now / period)
            seen_window, count = self._counts.get(counter, (window, 0))
            if seen_window != window:
                count = 0
            if count >= limit.calls:
                wait = max(wait, (window + 1) * period - now)
            slots.append((counter, window, count))
        if wait > 0:
            return wait
        for counter, window, count in slots:
            self._counts[counter] = (window, count + 1)
        return None

    def forget_except(self, endpoints: Iterable[str]) -> None:
        """Drop the counters of endpoints no longer in the routing table."""
        keep = set(endpoints)
        for counter in [c for c in self._counts if c[0] not in keep]:
            del self._counts[counter]
