"""An endpoint's captured requests, read back from its inference table (a Delta table).

Only requests worth replaying are read: answered 200, stored whole (no
`logging_error_codes`), the user's own (no `request_metadata.shadow`), of this endpoint
(`request_metadata.endpoint_name`). `replayable_count` says how many there are, for the plan;
`newest` gives the newest of them, oldest first, for the replay. A missing table holds none.
Reads files only; writes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

COLUMNS = ["timestamp_ms", "status_code", "request", "request_metadata", "logging_error_codes"]


@dataclass(frozen=True)
class CapturedRequest:
    """One captured request as it was sent: its body and the content type it had."""

    body: bytes
    content_type: str
    timestamp_ms: int


def _table(path: Path) -> pa.Table | None:
    if not (path / "_delta_log").is_dir():
        return None
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_table(
        columns=COLUMNS, filters=[("status_code", "=", 200)]
    )


def _replayable(table: pa.Table, endpoint: str) -> list[dict[str, Any]]:
    out = []
    for row in table.to_pylist():
        meta = dict(row.get("request_metadata") or [])
        if meta.get("shadow") == "true" or row.get("logging_error_codes"):
            continue
        if meta.get("endpoint_name", endpoint) != endpoint or row.get("request") is None:
            continue
        out.append(row)
    return out


def replayable_count(path: Path, endpoint: str) -> int:
    """How many captured requests of `endpoint` in the table at `path` can be replayed."""
    table = _table(path)
    return 0 if table is None else len(_replayable(table, endpoint))


def newest(path: Path, endpoint: str, n: int) -> list[CapturedRequest]:
    """The newest `n` replayable requests of `endpoint`, oldest first."""
    table = _table(path)
    if table is None:
        return []
    table = table.sort_by([("timestamp_ms", "descending")])
    rows = _replayable(table.slice(0, max(n * 2, n + 100)), endpoint)
    if len(rows) < n and table.num_rows > n * 2 + 100:
        rows = _replayable(table, endpoint)
    picked = rows[:n]
    picked.reverse()
    return [_request(r) for r in picked]


def _request(row: dict[str, Any]) -> CapturedRequest:
    text = str(row["request"])
    try:
        json.loads(text)
        ctype = "application/json"
    except ValueError:
        ctype = "text/csv"
    return CapturedRequest(text.encode("utf-8"), ctype, int(row["timestamp_ms"]))
