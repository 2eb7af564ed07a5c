"""How a change reaches its traffic: the rollout policy, its guards, and the guards' verdict.

`RolloutPolicy.from_manifest` reads a manifest's `rollout:` once, at load (and for states
recorded before the policy was stored typed); every later stage reads the typed value.
`judge` is the pure verdict of guards over the figures the gateway measured. No I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from declare.model.evidence import ReplayPolicy, ShadowPolicy


@dataclass(frozen=True)
class Guards:
    """Rollback guards, judged by the gateway's figures for the new entities over a bake."""

    max_error_rate: float | None = None
    max_p99_latency_ms: float | None = None
    min_requests: int = 20

    @property
    def any(self) -> bool:
        return self.max_error_rate is not None or self.max_p99_latency_ms is not None

    def rollback_condition(self) -> str:
        """E.g. 'error rate > 0.01 or p99 > 500 ms (judged from 20 requests)'; '' if none."""
        checks = []
        if self.max_error_rate is not None:
            checks.append(f"error rate > {self.max_error_rate:g}")
        if self.max_p99_latency_ms is not None:
            checks.append(f"p99 > {self.max_p99_latency_ms:g} ms")
        if not checks:
            return ""
        return f"{' or '.join(checks)} (judged from {self.min_requests} requests)"

    def to_json(self) -> dict[str, Any]:
        return {
            "max_error_rate": self.max_error_rate,
            "max_p99_latency_ms": self.max_p99_latency_ms,
            "min_requests": self.min_requests,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Guards:
        data = data or {}
        return cls(
            max_error_rate=data.get("max_error_rate"),
            max_p99_latency_ms=data.get("max_p99_latency_ms"),
            min_requests=int(data.get("min_requests") or 20),
        )


@dataclass(frozen=True)
class RolloutPolicy:
    """How a change that starts new replicas reaches 100 % of traffic (manifest `rollout:`).

    `steps` are the percentages of traffic on the new config, increasing, ending at 100;
    all_at_once is the single step (100,). `replay` and `shadow`: the evidence steps that run
    before any traffic moves (`declare.model.evidence`), None when not asked for.
    """

    strategy: str = "all_at_once"
    steps: tuple[int, ...] = (100,)
    bake_seconds: float = 0.0
    guards: Guards = field(default_factory=Guards)
    deadline_seconds: float | None = None
    replay: ReplayPolicy | None = None
    shadow: ShadowPolicy | None = None

    @property
    def progressive(self) -> bool:
        return len(self.steps) > 1

    @property
    def bakes(self) -> bool:
        return self.bake_seconds > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "steps": list(self.steps),
            "bake_seconds": self.bake_seconds,
            "guards": self.guards.to_json(),
            "deadline_seconds": self.deadline_seconds,
            # absent when not asked for, so states recorded before these existed compare equal
            **({"replay": self.replay.to_json()} if self.replay else {}),
            **({"shadow": self.shadow.to_json()} if self.shadow else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutPolicy:
        deadline = data.get("deadline_seconds")
        return cls(
            strategy=str(data.get("strategy", "all_at_once")),
            steps=tuple(int(x) for x in data.get("steps") or (100,)),
            bake_seconds=float(data.get("bake_seconds") or 0.0),
            guards=Guards.from_json(data.get("guards")),
            deadline_seconds=float(deadline) if deadline is not None else None,
            **_evidence(data),
        )

    @classmethod
    def from_manifest(cls, raw: Mapping[str, Any] | None) -> RolloutPolicy:
        """From the manifest's `rollout:` (already checked by the schema and `rollout_problems`)."""
        raw = raw or {}
        strategy = str(raw.get("strategy", "all_at_once"))
        steps: tuple[int, ...] = (100,)
        if strategy == "canary":
            steps = tuple(int(x) for x in raw.get("steps") or (10, 50, 100))
        elif strategy == "linear":
            size = int(raw.get("step_percentage") or 25)
            steps = (*tuple(range(size, 100, size)), 100)
        deadline = raw.get("deadline_seconds")
        return cls(
            strategy=strategy,
            steps=steps,
            bake_seconds=float(raw.get("bake_seconds") or 0.0),
            guards=Guards.from_json(raw.get("guards")),
            deadline_seconds=float(deadline) if deadline is not None else None,
            **_evidence(raw),
        )

    def describe(self) -> str:
        """One line for plans: 'canary 10% -> 50% -> 100%, bake 30s after each step; ...'."""
        text = f"{self.strategy} " + " -> ".join(f"{p}%" for p in self.steps)
        if self.bakes:
            text += f", bake {self.bake_seconds:g}s after each step"
        condition = self.guards.rollback_condition()
        if condition:
            text += f"; roll back if {condition}"
        if self.deadline_seconds:
            text += f"; deadline {self.deadline_seconds:g}s"
        if self.replay:
            text += f"; replay {self.replay.requests} captured requests first"
        if self.shadow:
            text += f"; shadow {self.shadow.percent}% for {self.shadow.seconds:g}s first"
        return text


def _evidence(data: Mapping[str, Any]) -> dict[str, Any]:
    replay, shadow = data.get("replay"), data.get("shadow")
    return {
        "replay": ReplayPolicy.from_json(replay) if isinstance(replay, Mapping) else None,
        "shadow": ShadowPolicy.from_json(shadow) if isinstance(shadow, Mapping) else None,
    }


def rollout_problems(raw: Any) -> list[tuple[tuple[str, ...], str]]:
    """Checks of `rollout:` that a JSON Schema cannot say: (field path, message) pairs."""
    if not isinstance(raw, Mapping):
        return []
    out: list[tuple[tuple[str, ...], str]] = []
    strategy = raw.get("strategy", "all_at_once")
    steps = raw.get("steps")
    if steps is not None and strategy != "canary":
        out.append((("steps",), "is only used with strategy: canary"))
    if raw.get("step_percentage") is not None and strategy != "linear":
        out.append((("step_percentage",), "is only used with strategy: linear"))
    if strategy == "canary" and isinstance(steps, list) and all(isinstance(x, int) for x in steps):
        if any(b <= a for a, b in itertools.pairwise(steps)):
            out.append((("steps",), f"must increase strictly, got {steps}"))
        elif steps and steps[-1] != 100:
            out.append((("steps",), f"must end at 100, got {steps}"))
    replay = raw.get("replay")
    if isinstance(replay, Mapping):
        requests, least = replay.get("requests", 100), replay.get("min_requests")
        if isinstance(requests, int) and isinstance(least, int) and least > requests:
            out.append((("replay", "min_requests"), f"{least} is more than requests ({requests})"))
    if strategy == "linear" and raw.get("step_percentage") == 100:
        out.append((("step_percentage",), "100 is all_at_once; use a smaller step"))
    return out


@dataclass(frozen=True)
class Figures:
    """What the gateway measured for one watched entity over a bake window."""

    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    p99_ms: float = 0.0

    def describe(self) -> str:
        return f"{self.requests} requests, {self.errors} errors, p99 {self.p99_ms:.0f} ms"


def judge(guards: Guards, figures: Mapping[str, Figures]) -> str:
    """Why the figures trip a guard ('' when they do not). Judged only past min_requests."""
    for entity, f in figures.items():
        if f.requests < guards.min_requests:
            continue
        if guards.max_error_rate is not None and f.error_rate > guards.max_error_rate:
            return (
                f"{entity} error rate {f.error_rate:.3f} ({f.errors} of {f.requests} "
                f"requests) > max_error_rate {guards.max_error_rate:g}"
            )
        if guards.max_p99_latency_ms is not None and f.p99_ms > guards.max_p99_latency_ms:
            return (
                f"{entity} p99 latency {f.p99_ms:.0f} ms over {f.requests} requests > "
                f"max_p99_latency_ms {guards.max_p99_latency_ms:g}"
            )
    return ""
