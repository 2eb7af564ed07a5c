"""The gateway's rate limiter: Databricks' `rate_limits` (the `RateLimit` values of the
routing table, `declare.model.limits`) enforced with fixed-window counters.

`RateLimiter` keeps fixed-window
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
from collections.abc import Callable, Iterable, Sequence

from declare.model.limits import RateLimit


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
