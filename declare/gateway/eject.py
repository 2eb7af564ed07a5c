"""Passive ejection: a replica that could not be reached is skipped for a while.

When a connection to a replica fails (`upstream.ConnectFailed`), the data plane ejects it
for `eject_seconds` (GatewayConfig): replica picks skip it, so requests stop trying a dead
process while the runtime replaces it. A table push that still lists it does not bring it
back early; once the time is up it is picked again (and ejected again if it still fails).
`eject_seconds` 0 turns ejection off.

The hot path asks `excluding` only while some replica is ejected (`until` is not empty);
the frozenset of ejected ids is cached until the next ejection or expiry. No I/O and no
timers: expiry is checked against the clock when asked; the clock is passed in for tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable


class Ejections:
    """Ejected replica ids and the monotonic time each is picked again."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.until: dict[str, float] = {}  # replica id -> when it is picked again
        self._clock = clock
        self._active: frozenset[str] = frozenset()
        self._next_expiry = math.inf

    def eject(self, replica_id: str) -> bool:
        """Skip `replica_id` for `seconds` from now; False when ejection is off."""
        if self.seconds <= 0:
            return False
        until = self._clock() + self.seconds
        self.until[replica_id] = until
        self._active = self._active | {replica_id}
        self._next_expiry = min(self._next_expiry, until)
        return True

    def active(self) -> frozenset[str]:
        """The ids ejected now (expired ones are forgotten)."""
        if self._clock() >= self._next_expiry:
            now = self._clock()
            until = self.until
            for rid in [r for r, t in until.items() if t <= now]:
                del until[rid]
            self._active = frozenset(until)
            self._next_expiry = min(until.values(), default=math.inf)
        return self._active

    def excluding(self, exclude: frozenset[str]) -> frozenset[str]:
        """`exclude` and the ids ejected now."""
        active = self.active()
        return active | exclude if exclude else active

    def retry_at(self, replica_ids: Iterable[str]) -> float | None:
        """The earliest monotonic time one of `replica_ids` is picked again, None if none is
        ejected."""
        active = self.active()
        times = [self.until[rid] for rid in replica_ids if rid in active]
        return min(times) if times else None
