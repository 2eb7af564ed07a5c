"""The capture writer: a thread of its own that appends batches to the Delta tables.

It sleeps until the buffer holds `flush_records` records or `flush_seconds` passed, takes
everything queued, groups it by table and appends each group with `deltalake.write_deltalake`
(mode append, partitioned by `date`; the table is created by its first write, then kept
open so that an append does not read its whole log again). Each append
is one Delta commit, atomic: a gateway killed mid-write leaves the table at its last commit,
with at most an unreferenced data file that readers ignore. `close` (at clean shutdown)
wakes it, writes what is left and joins it.

A failed write is logged with the table's folder and the error, its records counted as
failed, and the thread goes on. It never runs on the event loop and never blocks a request;
it does not decide what is captured (the data plane does) or build rows (`rows.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from declare.gateway.capture.buffer import CaptureBuffer, Captured
from declare.gateway.capture.rows import MAX_PAYLOAD_BYTES, PARTITION_BY, build_rows
from declare.model.capture import CaptureTarget

log = logging.getLogger("declare.gateway.capture")


class CaptureWriter:
    """Drains `buffer` into the tables below `root`, from its own thread."""

    def __init__(
        self,
        buffer: CaptureBuffer,
        root: Path,
        flush_seconds: float = 1.0,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.buffer = buffer
        self.root = root
        self.flush_seconds = flush_seconds
        self.max_payload_bytes = max_payload_bytes
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._paths: dict[CaptureTarget, Path] = {}
        self._tables: dict[CaptureTarget, Any] = {}  # the open DeltaTable of each target

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="declare-capture", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is buffered and stop the thread (blocking: call it off the loop)."""
        self._stopping = True
        self.buffer.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        import deltalake  # noqa: F401  (loaded here, off the loop, before the first batch)

        wake = self.buffer.wake
        while True:
            wake.wait(self.flush_seconds)
            wake.clear()
            self.flush()
            if self._stopping:
                self.flush()  # what arrived during the last write
                return

    def flush(self) -> None:
        """Append every buffered record to its table now."""
        batch = self.buffer.take()
        if not batch:
            return
        groups: dict[CaptureTarget, list[Captured]] = defaultdict(list)
        for record in batch:
            groups[record.target].append(record)
        for target, records in groups.items():
            self._write(target, records)

    def _write(self, target: CaptureTarget, records: list[Captured]) -> None:
        from deltalake import DeltaTable, write_deltalake  # only a capturing gateway needs it

        path = self._paths.get(target)
        if path is None:
            path = self._paths[target] = target.path(self.root)
        started = time.perf_counter()
        try:
            rows = build_rows(records, self.max_payload_bytes)
            table = self._tables.get(target)
            if table is None:  # the first write creates the table when it does not exist
                path.mkdir(parents=True, exist_ok=True)
                write_deltalake(str(path), rows, mode="append", partition_by=list(PARTITION_BY))
                self._tables[target] = DeltaTable(str(path))
            else:  # appends to the open table: its log is not read again from the start
                write_deltalake(table, rows, mode="append", partition_by=list(PARTITION_BY))
        except Exception as exc:  # any failure of one table's write must not end the thread
            self._tables.pop(target, None)  # opened afresh next time (moved, deleted, ...)
            self.buffer.failed += len(records)
            log.warning(
                "capture: %d records for %s could not be written to %s: %s",
                len(records),
                target.table_name,
                path,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return
        self.buffer.written += len(records)
        log.debug(
            "capture: %d records to %s in %.1f ms",
            len(records),
            target.table_name,
            (time.perf_counter() - started) * 1000.0,
        )
