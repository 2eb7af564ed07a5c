"""The autoscaler's decisions: pure functions from what was seen to the replica count wanted.

For each served entity the runtime knows its replica range, the count it runs for now (the
target recorded in the state) and, from the gateway, its demand: requests in flight,
waiting for a connection and held for want of a ready replica, at their peak since the last
look. `Memory` keeps, for each entity, the peaks of the recent past (an immutable value the
runtime carries from tick to tick). `decide` says what the target should become and why:

- scale up as soon as demand exceeds what the target serves (ceil(demand / per replica)),
  to at most the range's top; from zero as soon as one request is held, or came and went
  since the last look (wake);
- scale down one replica at a time, only once the demand of the whole quiet period
  (`scale_down_after_seconds`) fitted one replica fewer and that period has passed since
  the entity's last change of count, never below the range's bottom;
- to zero (when the range allows it) once no request came for `scale_to_zero_after_seconds`.

A count inside the declared range is the runtime's business, never a change in `plan`.
No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from declare.model.scaling import AutoscalePolicy, ReplicaRange


@dataclass(frozen=True)
class Demand:
    """What the gateway saw of one entity since the runtime last asked."""

    inflight: int = 0  # forwarded to a replica, awaiting its answer (now)
    queued: int = 0  # waiting for a connection slot to a replica (now)
    held: int = 0  # waiting for a ready replica (now): none is in rotation
    peak: int = 0  # most of the three together at once since the last look
    last_request_at: float | None = None  # unix seconds of the last request, if any

    @property
    def now(self) -> int:
        return self.inflight + self.queued + self.held


@dataclass(frozen=True)
class Trace:
    """The recent peaks of one entity's demand: (unix seconds, peak), oldest first."""

    peaks: tuple[tuple[float, int], ...] = ()
    since: float = 0.0  # when the runtime began watching it (nothing is known before)
    last_request_at: float | None = None

    def observe(self, now: float, demand: Demand, keep_seconds: float) -> Trace:
        peaks = tuple(p for p in self.peaks if p[0] >= now - keep_seconds)
        last = demand.last_request_at
        if demand.peak > 0 or demand.now > 0:
            last = max(last or 0.0, now)
        if self.last_request_at is not None:
            last = max(last or 0.0, self.last_request_at)
        return replace(
            self,
            peaks=(*peaks, (now, max(demand.peak, demand.now))),
            last_request_at=last,
        )

    def peak_since(self, start: float) -> int:
        return max((p for t, p in self.peaks if t >= start), default=0)


@dataclass(frozen=True)
class Memory:
    """The traces of every watched entity, by (endpoint, entity)."""

    traces: Mapping[tuple[str, str], Trace] = field(default_factory=dict)

    def observe(
        self, key: tuple[str, str], now: float, demand: Demand, keep_seconds: float
    ) -> Memory:
        trace = self.traces.get(key) or Trace(since=now)
        return Memory({**self.traces, key: trace.observe(now, demand, keep_seconds)})

    def trace(self, key: tuple[str, str]) -> Trace:
        return self.traces.get(key) or Trace()


@dataclass(frozen=True)
class Verdict:
    """A new target for one entity, and why (the reason is recorded in the state)."""

    target: int
    reason: str


def needed(demand: int, per_replica: int) -> int:
    return math.ceil(demand / per_replica) if demand > 0 else 0


def decide(
    *,
    rng: ReplicaRange,
    target: int,
    demand: Demand,
    trace: Trace,
    policy: AutoscalePolicy,
    per_replica: int,
    now: float,
    last_change_at: float | None = None,
) -> Verdict | None:
    """The entity's new target, or None to keep it (see the module docstring)."""
    if not rng.autoscaled:
        return None if target == rng.clamp(target) else Verdict(rng.clamp(target), "range")
    if target == 0:
        # A request since the last look wakes it, also one whose hold ran out before the
        # runtime looked (its answer was 503, and the next ones must find a replica).
        if demand.held > 0 or demand.now > 0 or demand.peak > 0:
            busy = max(demand.now, demand.peak)
            want = rng.high if rng.pinned else rng.clamp(max(1, needed(busy, per_replica)))
            if demand.held > 0:
                return Verdict(want, f"wake from zero: {demand.held} request(s) held")
            return Verdict(want, f"wake from zero: {busy} request(s) since the last look")
        return None
    want = needed(max(demand.peak, demand.now), per_replica)
    if want > target and target < rng.high and not rng.pinned:
        up = min(rng.high, want)
        served = target * per_replica
        return Verdict(
            up,
            f"scale up: {max(demand.peak, demand.now)} requests in flight or waiting > "
            f"{served} served by {target} replica(s)",
        )
    if rng.low == 0:
        last = trace.last_request_at or trace.since
        if now - last >= policy.scale_to_zero_after_seconds and demand.now == 0:
            return Verdict(
                0,
                f"scale to zero: no request for {policy.scale_to_zero_after_seconds:g} s",
            )
    quiet_from = now - policy.scale_down_after_seconds
    if trace.since > quiet_from:
        return None  # not watched for a whole quiet period yet
    if last_change_at is not None and now - last_change_at < policy.scale_down_after_seconds:
        return None  # one step down per quiet period, as Databricks scales down
    floor = max(rng.low, 1)
    recent = trace.peak_since(quiet_from)
    if not rng.pinned and target > floor and needed(recent, per_replica) <= target - 1:
        return Verdict(
            target - 1,
            f"scale down: at most {recent} requests at once in the last "
            f"{policy.scale_down_after_seconds:g} s fit {target - 1} replica(s)",
        )
    return None
