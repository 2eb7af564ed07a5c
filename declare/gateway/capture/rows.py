"""The inference table's columns and the rows built from captured requests.

The columns are those of Databricks' inference tables for custom models, with their types:

    databricks_request_id  STRING   a new id per request (a uuid)
    client_request_id      STRING   the request body's `client_request_id`, when it has one
    date                   DATE     the UTC day the request arrived (the partition column)
    timestamp_ms           LONG     when it arrived, unix milliseconds
    status_code            INT      the HTTP status the caller got (4xx, 429 and 5xx too)
    execution_time_ms      LONG     the time the gateway took to answer, milliseconds
    sampling_fraction      DOUBLE   always 1.0: every request is captured
    request                STRING   the request body as sent (UTF-8)
    response               STRING   the response body as returned
    request_metadata       MAP<STRING, STRING>  endpoint_name, served_entity_name,
                                    model_name, model_version, requester (those known)
    logging_error_codes    ARRAY<STRING>  as Databricks' AI Gateway tables:
                                    MAX_REQUEST_SIZE_EXCEEDED / MAX_RESPONSE_SIZE_EXCEEDED
                                    when that payload was over `max_payload_bytes` and is
                                    stored truncated to it

Pure: builds a `pyarrow.Table` from values; no I/O (the writer commits it).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
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

_EPOCH = dt.date(1970, 1, 1)
_MS_PER_DAY = 86_400_000


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


def metadata(record: Captured) -> list[tuple[str, str]]:
    pairs = (
        ("endpoint_name", record.endpoint),
        ("served_entity_name", record.served_entity),
        ("model_name", record.model_name),
        ("model_version", record.model_version),
        ("requester", record.requester),
    )
    return [(k, v) for k, v in pairs if v is not None]


def build_rows(records: Sequence[Captured], max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> pa.Table:
    """The rows of `records`, in `SCHEMA`, in the order given."""
    columns: dict[str, list[object]] = {name: [] for name in SCHEMA.names}
    for r in records:
        request, request_cut = payload_text(r.request, max_payload_bytes)
        response, response_cut = payload_text(r.response, max_payload_bytes)
        columns["databricks_request_id"].append(str(uuid.uuid4()))
        columns["client_request_id"].append(
            client_request_id(r.request) if not request_cut else None
        )
        columns["date"].append(_EPOCH + dt.timedelta(days=r.timestamp_ms // _MS_PER_DAY))
        columns["timestamp_ms"].append(r.timestamp_ms)
        columns["status_code"].append(r.status_code)
        columns["execution_time_ms"].append(r.execution_time_ms)
        columns["sampling_fraction"].append(1.0)
        columns["request"].append(request)
        columns["response"].append(response)
        columns["request_metadata"].append(metadata(r))
        columns["logging_error_codes"].append(
            [
                code
                for code, cut in (
                    (REQUEST_TOO_LARGE, request_cut),
                    (RESPONSE_TOO_LARGE, response_cut),
                )
                if cut
            ]
        )
    return pa.Table.from_pydict(columns, schema=SCHEMA)
