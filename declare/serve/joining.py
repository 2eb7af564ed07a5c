"""Which `/invocations` requests may share one `predict` call, and how they are joined and split.

`Joiner(model, max_rows)` exists only for a model with a column-based input schema (MLflow
casts each column to the schema's type, so a joined frame has the types each request's own
frame would have). `candidate(body, content_type)` says whether a request can be joined:

- Content-Type `application/json` (charset utf-8 or none), a body of at most 64 KiB
  (`declare.serve.body`);
- a JSON object with `dataframe_split` (`columns` and `data`, no `index`) or
  `dataframe_records`, optionally `params`, and nothing else;
- at least one row and at most `max_rows`; every row of the same shape: the same columns in the
  same order, each value a JSON scalar of the same type as in the request's first row.

Requests join when all of that matches: the format, the columns, the types of the values and
the params (the same JSON), so the joined frame holds exactly the rows each would have held
(no column appears, no dtype widens). `run(candidates)` parses the joined rows with MLflow's
own `dataframe_from_parsed_json`, calls `model.predict` once (with the params when the model
takes them), splits the output back by each request's row count (an array, a DataFrame or
Series by rows, a list by items) and serializes each part with MLflow's
`predictions_to_json`. It returns None for every request whenever anything goes wrong
(parsing, predict raising, an output that is not one row per input row): those requests are
then answered alone by MLflow's code path, so a caller gets its own error, never another's. An
output that cannot be split turns joining off for the model (it will not start to split later).

Only for models whose rows are independent (the user says so by turning batching on): a
row's answer must not depend on the other rows of the frame. Float outputs may then differ
from a lone request's in the last digits when the model's arithmetic depends on the batch
size (as BLAS matrix products can).

What it does not do: wait for requests or run predictions in a thread (`declare.serve.batching`).
"""

from __future__ import annotations

import inspect
import io
import json
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Candidate", "Joiner"]

_SCALARS = (str, int, float, bool, type(None))
_SPLIT = "dataframe_split"
_RECORDS = "dataframe_records"


@dataclass(frozen=True, slots=True)
class Candidate:
    key: Hashable  # (format, columns, value types, params as JSON)
    rows: list[Any]  # split: lists of values; records: dicts
    columns: tuple[str, ...]
    params: dict[str, Any] | None
    size: int


def _types(values: Sequence[Any]) -> tuple[str, ...] | None:
    names = []
    for value in values:
        if not isinstance(value, _SCALARS):
            return None
        names.append(type(value).__name__)
    return tuple(names)


def _split_rows(value: Any) -> tuple[tuple[str, ...], tuple[str, ...], list[Any]] | None:
    if not isinstance(value, dict) or set(value) != {"columns", "data"}:
        return None
    columns, rows = value["columns"], value["data"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        return None
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], list):
        return None
    if len(rows[0]) != len(columns):
        return None
    types = _types(rows[0])
    if types is None:
        return None
    for row in rows[1:]:
        if not isinstance(row, list) or len(row) != len(columns) or _types(row) != types:
            return None
    return tuple(columns), types, rows


def _record_rows(value: Any) -> tuple[tuple[str, ...], tuple[str, ...], list[Any]] | None:
    if not isinstance(value, list) or not value or not isinstance(value[0], dict):
        return None
    columns = tuple(value[0])
    if not all(isinstance(c, str) for c in columns):
        return None
    types = _types(list(value[0].values()))
    if types is None:
        return None
    for record in value[1:]:
        if not isinstance(record, dict) or tuple(record) != columns:
            return None
        if _types(list(record.values())) != types:
            return None
    return columns, types, value


def _parts(output: Any, sizes: Sequence[int]) -> list[Any] | None:
    """`output` cut into one part per request, by rows; None when it is not one row per row."""
    import numpy as np
    import pandas as pd

    total = sum(sizes)
    if isinstance(output, np.ndarray) and output.ndim >= 1 and output.shape[0] == total:
        cut: Any = output
    elif isinstance(output, pd.DataFrame | pd.Series) and len(output) == total:
        cut = output.iloc
    elif isinstance(output, list) and len(output) == total:
        cut = output
    else:
        return None
    parts, start = [], 0
    for size in sizes:
        parts.append(cut[start : start + size])
        start += size
    return parts


class Joiner:
    """See the module's docstring."""

    @classmethod
    def for_model(cls, model: Any, max_rows: int) -> Joiner | None:
        """A Joiner for `model`, or None when its requests cannot be joined (and why, logged)."""
        metadata = model.metadata
        schema = metadata.get_input_schema()
        reason = None
        if schema is None:
            reason = "the model has no input schema"
        elif schema.is_tensor_spec():
            reason = "the model's input schema is a tensor spec"
        elif getattr(metadata, "_is_signature_from_type_hint", lambda: False)():
            reason = "the model's signature comes from type hints"
        if reason is not None:
            print(f"declare.serve: batching off: {reason}", file=sys.stderr)
            return None
        return cls(model, schema, max_rows)

    def __init__(self, model: Any, schema: Any, max_rows: int) -> None:
        from mlflow.pyfunc import scoring_server
        from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

        self._model = model
        self._schema = schema
        self._max_rows = max_rows
        self._parse: Any = dataframe_from_parsed_json
        self._to_json: Any = scoring_server.predictions_to_json
        self._takes_params = "params" in inspect.signature(model.predict).parameters
        self.enabled = True

    def candidate(self, data: dict[str, Any] | None) -> Candidate | None:
        """The request (its JSON object, `declare.serve.body.json_object`) as a Candidate, or
        None when it must be answered alone."""
        if not self.enabled or data is None:
            return None
        params = data.get("params")
        if params is not None and not isinstance(params, dict):
            return None
        formats = set(data) - {"params"}
        if formats == {_SPLIT}:
            shape = _split_rows(data[_SPLIT])
        elif formats == {_RECORDS}:
            shape = _record_rows(data[_RECORDS])
        else:
            return None
        if shape is None:
            return None
        columns, types, rows = shape
        if len(rows) > self._max_rows:
            return None
        params_key = json.dumps(params, sort_keys=True)
        key = (next(iter(formats)), columns, types, params_key)
        return Candidate(key, rows, columns, params, len(rows))

    def run(self, candidates: Sequence[Candidate]) -> list[bytes | None]:
        """One predict for all `candidates` (of one key); each one's answer, or None for all."""
        alone: list[bytes | None] = [None] * len(candidates)
        first = candidates[0]
        rows = [row for candidate in candidates for row in candidate.rows]
        try:
            if first.key[0] == _SPLIT:  # type: ignore[index]
                frame = self._parse(
                    {"columns": list(first.columns), "data": rows}, "split", self._schema
                )
            else:
                frame = self._parse(rows, "records", self._schema)
            if self._takes_params:
                output = self._model.predict(frame, params=first.params)
            else:
                output = self._model.predict(frame)
        except Exception:
            return alone  # each request is answered alone, with its own error
        parts = _parts(output, [c.size for c in candidates])
        if parts is None:
            self.enabled = False
            print(
                f"declare.serve: batching off: the model answered {type(output).__name__} "
                f"for {len(rows)} rows, not one row per input row",
                file=sys.stderr,
            )
            return alone
        answers: list[bytes | None] = []
        try:
            for part in parts:
                buffer = io.StringIO()
                self._to_json(part, buffer)
                answers.append(buffer.getvalue().encode())
        except Exception:
            return alone
        return answers
