"""Adaptive micro-batching: concurrent items with the same key joined into one call.

`Batcher(run, key, size, max_batch_size, max_delay_ms, executor)`; `await submit(item)`
returns what `run` returned for that item. One call of `run(items)` (in `executor`) is in
progress at a time; it gets items of one key (the oldest waiting item's), in arrival order,
together at most `max_batch_size` in `size`, and returns one result per item, in order.

Adaptive: an item that comes while nothing runs and nothing waits is run at once, alone, so a
lone caller never waits for a batch. Items that come while a call runs wait for it; when it
ends they go together. Only while items keep coming (the previous call ended with items
waiting) may a batch smaller than `max_batch_size` wait for more, and then only until its
oldest item has waited `max_delay_ms`. An item larger than `max_batch_size` runs alone.

Errors: an exception from `run` goes to every caller of that call; a result list of the wrong
length is a bug in `run` and raises RuntimeError in each caller. A caller that gives up
(cancelled, e.g. by a request timeout) is skipped when the results come.

What it does not do: know what items are (`declare.serve.joining` makes them), or split and
join data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class _Waiting(Generic[T, R]):
    item: T
    key: Hashable
    size: int
    since: float
    future: asyncio.Future[R]


class Batcher(Generic[T, R]):
    """See the module's docstring."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R]],
        key: Callable[[T], Hashable],
        size: Callable[[T], int],
        max_batch_size: int,
        max_delay_ms: float,
        executor: concurrent.futures.Executor,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_delay_ms < 0:
            raise ValueError("max_delay_ms must not be negative")
        self._run = run
        self._key = key
        self._size = size
        self.max_batch_size = max_batch_size
        self._max_delay = max_delay_ms / 1000.0
        self._executor = executor
        self._waiting: deque[_Waiting[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.calls = 0  # calls of `run`, and the items they carried: for tests and logs
        self.items = 0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append(_Waiting(item, self._key(item), self._size(item), loop.time(), future))
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._loop())
        return await future

    async def close(self) -> None:
        """Stop the runner; callers still waiting get CancelledError."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        while self._waiting:
            self._waiting.popleft().future.cancel()

    # -- internals ------------------------------------------------------------------------------

    def _take(self) -> list[_Waiting[T, R]]:
        """The oldest live item, then later ones of its key while they fit."""
        while self._waiting and self._waiting[0].future.done():
            self._waiting.popleft()  # its caller gave up
        if not self._waiting:
            return []
        first = self._waiting.popleft()
        batch, total = [first], first.size
        if first.size >= self.max_batch_size:
            return batch
        kept: deque[_Waiting[T, R]] = deque()
        while self._waiting:
            entry = self._waiting.popleft()
            if entry.future.done():
                continue
            if entry.key == first.key and total + entry.size <= self.max_batch_size:
                batch.append(entry)
                total += entry.size
            else:
                kept.append(entry)
        self._waiting = kept
        return batch

    def _ready_rows(self, key: Hashable) -> int:
        return sum(w.size for w in self._waiting if w.key == key and not w.future.done())

    async def _fill(self) -> None:
        """Under load: wait for the oldest item's batch to fill, up to its max delay."""
        loop = asyncio.get_running_loop()
        first = self._waiting[0]
        deadline = first.since + self._max_delay
        while self._ready_rows(first.key) < self.max_batch_size:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        under_load = False
        while self._waiting:
            if under_load:
                await self._fill()
            batch = self._take()
            if not batch:
                break
            self.calls += 1
            self.items += len(batch)
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run, [w.item for w in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} items got {len(results)} results")
            except Exception as exc:
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
            else:
                for waiting, result in zip(batch, results, strict=True):
                    if not waiting.future.done():
                        waiting.future.set_result(result)
            under_load = bool(self._waiting)
