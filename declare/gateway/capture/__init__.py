"""Inference tables: every request of a capturing endpoint and its answer, in a Delta table.

The data plane hands one `Captured` value per request to the `CaptureBuffer` (a bounded
in-memory queue; when it is full the record is dropped and counted, and the request never
waits). The `CaptureWriter` thread drains it in batches (every `flush_records` records or
`flush_seconds` seconds, and at a clean shutdown), turns each batch into rows with
Databricks' inference-table columns (`rows.py`) and appends them to each endpoint's table
with `deltalake` (delta-rs) in one atomic commit per table and batch: a crash loses at most
the records not yet committed, never the table.

    rows     the columns (Databricks' schema for custom models) and the row builder
    buffer   the bounded queue and its counters (captured, dropped, written, failed)
    writer   the thread that writes batches to the tables
    intake   one request and its answer, from the data plane, into the buffer

Which endpoints capture, and where below the capture root, comes with the routing table
(`EndpointTable.capture`, a `declare.model.CaptureTarget`); this package never reads
manifests or declare's state.
"""

from declare.gateway.capture.buffer import CaptureBuffer, Captured
from declare.gateway.capture.writer import CaptureWriter

__all__ = ["CaptureBuffer", "CaptureWriter", "Captured"]
