"""Micro-batching of a served entity (a declare addition to the manifest, opt-in).

With `batching`, a replica joins requests that are waiting at the same time into one predict
call of at most `max_batch_size` rows and splits the answers back; when requests are already
queued, a batch waits at most `max_delay_ms` for more rows (an idle replica does not delay a
request). Only for models whose rows are independent, and only a replica server that
batches can honour it (a provider that cannot says so at plan time:
`declare.provider.EntityChecks`).

`Batching` is the value an `EntitySpec` and a `ReplicaSpec` carry; the JSON Schema checks
the manifest's types and ranges, `batching_problems` what a schema cannot (a NaN delay).
Pure; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BATCH_SIZE_MIN = 2
BATCH_SIZE_MAX = 1024
MAX_DELAY_MS_MAX = 1000.0  # and more than 0

DELAY_MESSAGE = "must be a number of milliseconds, more than 0 and at most 1000"


@dataclass(frozen=True)
class Batching:
    """At most `max_batch_size` rows per predict call; a batch waits at most `max_delay_ms`."""

    max_batch_size: int
    max_delay_ms: float

    def describe(self) -> str:
        """'batches of up to 32 rows, waiting at most 2 ms for more'."""
        return (
            f"batches of up to {self.max_batch_size} rows, waiting at most "
            f"{self.max_delay_ms:g} ms for more"
        )

    def to_json(self) -> dict[str, Any]:
        # int and float always, so that equal settings hash alike (2 and 2.0 ms)
        return {
            "max_batch_size": int(self.max_batch_size),
            "max_delay_ms": float(self.max_delay_ms),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Batching:
        return cls(
            max_batch_size=int(data["max_batch_size"]), max_delay_ms=float(data["max_delay_ms"])
        )


def batching_from_json(data: Any) -> Batching | None:
    """The recorded setting; None when absent or null (records written before batching)."""
    return Batching.from_json(data) if isinstance(data, Mapping) else None


def batching_problems(raw: Any) -> list[tuple[str, str]]:
    """What the JSON Schema cannot say about a manifest's `batching`: (field, message) pairs.

    A NaN delay passes every bound of a schema; the other checks are the schema's.
    """
    if not isinstance(raw, Mapping):
        return []
    delay = raw.get("max_delay_ms")
    if isinstance(delay, float) and math.isnan(delay):
        return [("max_delay_ms", f"{DELAY_MESSAGE}, got nan")]
    return []
