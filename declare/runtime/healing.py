"""Crash loops: a served entity whose replicas keep dying is backed off, not restarted in a
tight loop. Pure functions over the recorded `EntityScale`.

A replica that dies within `stable_seconds` of its start, or a replacement that never
answers its readiness prediction, is one failure of its entity. After n failures in a row
the next replacement waits: nothing after the first, then 5 s, 10 s, 20 s ... up to
`backoff_max_seconds`. A replica that stays up `stable_seconds` ends the loop.
"""

from __future__ import annotations

from dataclasses import replace

from declare.state.scaling import EntityScale

FIRST_BACKOFF_SECONDS = 5.0


def backoff_seconds(failures: int, longest: float) -> float:
    if failures <= 1:
        return 0.0
    return min(longest, FIRST_BACKOFF_SECONDS * float(2 ** (failures - 2)))


def failed(scale: EntityScale, reason: str, now: float, longest: float) -> EntityScale:
    """One more failure: the crash loop's count, its reason and when to try again."""
    failures = scale.failures + 1
    wait = backoff_seconds(failures, longest)
    return replace(
        scale,
        failures=failures,
        last_failure=reason[:500],
        backoff_until=now + wait if wait > 0 else None,
    )


def recovered(scale: EntityScale) -> EntityScale:
    return replace(scale, failures=0, backoff_until=None, last_failure="")


def describe(scale: EntityScale, now: float) -> str:
    """'crash loop: 3 failures in a row; next attempt in 12 s; last: ...'."""
    return scale.crash_text(now)
