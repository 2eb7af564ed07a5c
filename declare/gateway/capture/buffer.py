"""The bounded queue between the data plane and the capture writer, and its counters.

`offer` is called on the gateway's event loop, once per captured request: it appends to a
`collections.deque` (safe between one producer and one consumer thread in CPython) or, when
`capacity` records already wait, drops the record and counts it. It never blocks and never
waits for the writer. When `flush_records` records wait it wakes the writer early.

This module does no I/O: the writer (`writer.py`) takes batches with `take`.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import NamedTuple

from declare.model.capture import CaptureTarget


class Captured(NamedTuple):
    """One request as the data plane saw it; turned into a row off the event loop."""

    target: CaptureTarget
    endpoint: str
    served_entity: str | None  # None when the gateway answered before choosing one
    model_name: str | None
    model_version: str | None
    timestamp_ms: int  # when the request arrived, unix milliseconds
    status_code: int
    execution_time_ms: int
    request: bytes
    response: bytes
    requester: str
    shadow: bool = False  # a candidate's answer to a mirrored request (`shadow.py`)


class CaptureBuffer:
    """Records waiting to be written, at most `capacity`; counts what it drops."""

    def __init__(self, capacity: int = 20_000, flush_records: int = 5_000) -> None:
        if capacity < 1 or flush_records < 1:
            raise ValueError("the capture buffer and its flush size must be at least 1")
        self.capacity = capacity
        # above `capacity`, only the writer's timer (and shutdown) writes: what does not fit
        # meanwhile is dropped
        self.flush_records = flush_records
        self._queue: deque[Captured] = deque()
        self.wake = threading.Event()  # set when a batch is ready (or at shutdown)
        self.captured = 0  # accepted into the buffer
        self.dropped = 0  # refused: the buffer was full
        self.written = 0  # committed to a table (counted by the writer)
        self.failed = 0  # taken but not written: the write failed (counted by the writer)

    def offer(self, record: Captured) -> bool:
        """Queue `record`; False (and one more drop) when the buffer is full."""
        queue = self._queue
        if len(queue) >= self.capacity:
            self.dropped += 1
            return False
        queue.append(record)
        self.captured += 1
        if len(queue) >= self.flush_records and not self.wake.is_set():
            self.wake.set()
        return True

    def take(self) -> list[Captured]:
        """Everything queued now, oldest first (called by the writer thread only)."""
        queue = self._queue
        return [queue.popleft() for _ in range(len(queue))]

    def __len__(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, int]:
        """The counters, for the admin metrics: since the gateway started."""
        return {
            "captured": self.captured,
            "dropped": self.dropped,
            "written": self.written,
            "failed": self.failed,
            "buffered": len(self._queue),
            "capacity": self.capacity,
        }
