"""The inference table's columns and the rows built from captured requests.

The columns are those of Databricks' inference tables for custom models, with their types:

    databricks_request_id  STRING   a new id per request (a uuid)
    client_request_id      STRING   the request body's `client_request_id`, when it has one
    date                   DATE     the UTC day the request arrived (the partition column)
    timestamp_ms           LONG     when it arrived, unix milliseconds
    status_code            INT      the HTTP status the caller got (4xx, 429 and 5xx too);
                                    on a shadow row, the candidate's
    execution_time_ms      LONG     the time the gateway took to answer, milliseconds; on
                                    a shadow row, the candidate's answer's
    sampling_fraction      DOUBLE   always 1.0: every request is captured
    request                STRING   the request body as sent (UTF-8)
    response               STRING   the response body as returned
    request_metadata       MAP<STRING, STRING>  endpoint_name, served_entity_name,
                                    model_name, model_version, requester (those known);
                                    shadow = "true" on the row of a candidate's answer
                                    to a mirrored request (a shadow step: its own row,
                                    beside the user's, which has no such key)
    logging_error_codes    ARRAY<STRING>  as Databricks' AI Gateway tables:
                                    MAX_REQUEST_SIZE_EXCEEDED / MAX_RESPONSE_SIZE_EXCEEDED
                                    when that payload was over `max_payload_bytes` and is
                                    stored truncated to it

Pure: builds a `pyarrow.Table` from values; no I/O (the writer commits it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import pyarrow as pa

from declare.gateway.capture.buffer import Captured

MAX_PAYLOAD_BYTES = 1024 * 1024  # Databricks logs payloads up to 1 MiB
REQUEST_TOO_LARGE = "MAX_REQUEST_SIZE_EXCEEDED"
RESPONSE_TOO_LARGE = "MAX_RESPONSE_SIZE_EXCEEDED"
PARTITION_BY = ("date",)

SCHEMA = pa.schema(
    [
        pa.field("databricks_request_id", pa.string(), nullable=False),
        pa.field("client_request_id", pa.string()),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("timestamp_ms", pa.int64(), nullable=False),
        pa.field("status_code", pa.int32(), nullable=False),
        pa.field("execution_time_ms", pa.int64()),
        pa.field("sampling_fraction", pa.float64()),
        pa.field("request", pa.string()),
        pa.field("response", pa.string()),
        pa.field("request_metadata", pa.map_(pa.string(), pa.string())),
        pa.field("logging_error_codes", pa.list_(pa.string())),
    ]
)


def payload_text(body: bytes, limit: int) -> tuple[str, bool]:
    """`body` as text, cut to `limit` bytes (a character cut in two is left out); True
    when it was cut."""
    if len(body) <= limit:
        return body.decode("utf-8", "replace"), False
    return body[:limit].decode("utf-8", "ignore"), True


def client_request_id(body: bytes) -> str | None:
    """The `client_request_id` field of a JSON request body (Databricks' way for a caller
    to tag its request), or None."""
    if b"client_request_id" not in body:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    found = value.get("client_request_id") if isinstance(value, dict) else None
    return None if found is None else str(found)


def request_ids(n: int) -> list[str]:
    """`n` random (version 4) UUIDs as text, from one read of the system's random source."""
    h = os.urandom(16 * n).hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-"
        f"{_VARIANT[int(h[i + 16], 16) & 3]}{h[i + 17 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


_VARIANT = "89ab"


def _texts(bodies: Sequence[bytes], limit: int) -> tuple[pa.Array, list[bool]]:
    """The bodies as a string column, cut to `limit` bytes, and which of them were cut."""
    cut = [len(b) > limit for b in bodies]
    if any(cut):
        bodies = [b[:limit] if c else b for b, c in zip(bodies, cut, strict=True)]
    try:  # one pass in Arrow; UTF-8 is checked there
        return pa.array(bodies, pa.binary()).cast(pa.string()), cut
    except pa.ArrowInvalid:  # a body that is not UTF-8 (or a character cut in two)
        texts = [
            b.decode("utf-8", "ignore" if c else "replace")
            for b, c in zip(bodies, cut, strict=True)
        ]
        return pa.array(texts, pa.string()), cut


def _metadata(records: Sequence[Captured]) -> pa.Array:
    offsets = [0]
    keys: list[str] = []
    values: list[str] = []
    cache: dict[tuple[object, ...], list[tuple[str, str]]] = {}
    for r in records:
        who = (r.endpoint, r.served_entity, r.model_name, r.model_version, r.requester, r.shadow)
        pairs = cache.get(who)
        if pairs is None:
            pairs = cache[who] = metadata(r)
        for k, v in pairs:
            keys.append(k)
            values.append(v)
        offsets.append(len(keys))
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(values, pa.string())
    )


def metadata(record: Captured) -> list[tuple[str, str]]:
    pairs = (
        ("endpoint_name", record.endpoint),
        ("served_entity_name", record.served_entity),
        ("model_name", record.model_name),
        ("model_version", record.model_version),
        ("requester", record.requester),
        ("shadow", "true" if record.shadow else None),
    )
    return [(k, v) for k, v in pairs if v is not None]


def build_rows(records: Sequence[Captured], max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> pa.Table:
    """The rows of `records`, in `SCHEMA`, in the order given (column-wise, in Arrow where
    it can: this runs on the writer thread, which shares the interpreter with the loop)."""
    n = len(records)
    requests = [r.request for r in records]
    request, request_cut = _texts(requests, max_payload_bytes)
    response, response_cut = _texts([r.response for r in records], max_payload_bytes)
    timestamps = pa.array([r.timestamp_ms for r in records], pa.int64())
    codes: list[list[str]] = [[] for _ in range(n)] if any(request_cut) or any(response_cut) else []
    for i in range(len(codes)):
        if request_cut[i]:
            codes[i].append(REQUEST_TOO_LARGE)
        if response_cut[i]:
            codes[i].append(RESPONSE_TOO_LARGE)
    columns = {
        "databricks_request_id": pa.array(request_ids(n), pa.string()),
        "client_request_id": pa.array(
            [
                None if cut else client_request_id(b)
                for b, cut in zip(requests, request_cut, strict=True)
            ],
            pa.string(),
        ),
        "date": timestamps.cast(pa.timestamp("ms")).cast(pa.date32()),
        "timestamp_ms": timestamps,
        "status_code": pa.array([r.status_code for r in records], pa.int32()),
        "execution_time_ms": pa.array([r.execution_time_ms for r in records], pa.int64()),
        "sampling_fraction": pa.repeat(pa.scalar(1.0, pa.float64()), n),
        "request": request,
        "response": response,
        "request_metadata": _metadata(records),
        "logging_error_codes": pa.array(codes or [[]] * n, pa.list_(pa.string())),
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)
