"""A shorter way to a scikit-learn model's answer, for the requests where it is the same answer.

MLflow answers a 1-row request to a scikit-learn model in about 1.5 ms, of which the model's
own `predict` is a tenth: the rest builds a DataFrame, casts it to the schema's types, checks
it against the schema, and sklearn turns it back into the float64 array it computes on.
`Direct.for_model(model)` exists when that detour cannot change the answer:

- the model is MLflow's sklearn flavor, every estimator in it (a Pipeline's steps too) is
  scikit-learn's own class, and the pyfunc predict function is one the estimator has;
- its input schema is named columns, every one `double` and required, and the estimator was
  fitted with those feature names in that order (or with none);

and `rows(data)` takes the short way only for a request that MLflow would turn into exactly
that float64 array: `application/json` (charset utf-8 or none), at most 64 KiB, decoded once by
`declare.serve.body`, a JSON object with only `dataframe_split` (`columns` equal to the
schema's, in order, and `data`) or only `dataframe_records` (every record's keys the schema's,
in order), at least one row, and every value a JSON number (not a boolean). It builds the
array, calls the estimator's predict function on it, and serializes its output with MLflow's
`predictions_to_json`. Anything else, or an output that is not an ndarray of one row per row,
is answered by MLflow's own path (`declare.serve.scoring`), and so is a request whose
prediction raises, so errors are MLflow's, word for word. When MLflow's path answers a request
on which the estimator raised, the short way is turned off for good (the estimator wants a
DataFrame).

What it does not do: other flavors, params, CSV, `instances`/`inputs`; it does not enforce
the schema itself (it only takes requests that pass it by construction).
"""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["Direct"]


def _numbers(row: Sequence[Any]) -> bool:
    return all(type(v) is float or type(v) is int for v in row)


def _own_classes(estimator: Any) -> bool:
    """Every class in `estimator` (and its Pipeline steps) is scikit-learn's."""
    if not type(estimator).__module__.startswith("sklearn."):
        return False
    steps = getattr(estimator, "steps", None)
    if steps is not None:
        return all(step == "passthrough" or _own_classes(step) for _, step in steps)
    return True


class Direct:
    """See the module's docstring."""

    @classmethod
    def for_model(cls, model: Any) -> Direct | None:
        try:
            from mlflow.sklearn import _SklearnModelWrapper
        except ImportError:
            return None
        impl = getattr(model, "_model_impl", None)
        predict_fn = getattr(model, "_predict_fn", None)
        if not isinstance(impl, _SklearnModelWrapper) or predict_fn is None:
            return None
        estimator = impl.sklearn_model
        name = getattr(predict_fn, "__name__", "")
        function = getattr(estimator, name, None)
        if function is None or not _own_classes(estimator):
            return None
        schema = model.metadata.get_input_schema()
        if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
            return None
        if model.metadata.get_params_schema() is not None:
            return None
        inputs = schema.inputs
        if not all(getattr(i.type, "name", None) == "double" and i.required for i in inputs):
            return None
        names = [i.name for i in inputs]
        fitted = getattr(estimator, "feature_names_in_", None)
        if fitted is not None and list(fitted) != names:
            return None
        return cls(function, names)

    def __init__(self, predict: Any, names: list[str]) -> None:
        import numpy as np
        from mlflow.pyfunc import scoring_server

        self._predict = predict
        self._names = names
        self._array: Any = np.array
        self._ndarray: type[Any] = np.ndarray
        self._to_json: Any = scoring_server.predictions_to_json
        self.enabled = True
        # The estimator gets the array its DataFrame would have become; sklearn's note that
        # it has no column names says nothing here.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def rows(self, data: dict[str, Any] | None) -> list[list[Any]] | None:
        """The rows of the request's JSON object (`declare.serve.body.json_object`) when the
        short way gives MLflow's answer; else None."""
        if not self.enabled or data is None or len(data) != 1:
            return None
        names = self._names
        if "dataframe_split" in data:
            split = data["dataframe_split"]
            if not isinstance(split, dict) or len(split) != 2 or split.get("columns") != names:
                return None
            rows = split.get("data")
            if not isinstance(rows, list) or not rows:
                return None
            width = len(names)
            for row in rows:
                if not isinstance(row, list) or len(row) != width or not _numbers(row):
                    return None
            return rows
        records = data.get("dataframe_records")
        if not isinstance(records, list) or not records:
            return None
        out = []
        for record in records:
            if not isinstance(record, dict) or list(record) != names:
                return None
            row = list(record.values())
            if not _numbers(row):
                return None
            out.append(row)
        return out

    def answer(self, batches: Sequence[list[list[Any]]]) -> list[bytes | None]:
        """The JSON MLflow answers for each of `batches` (rows from `rows()`), from one
        predict call; None for a part that must be answered MLflow's way. Raises what the
        estimator raises (the caller answers those requests MLflow's way, and calls
        `turn_off` when MLflow's way then succeeds)."""
        rows = batches[0] if len(batches) == 1 else [row for rows in batches for row in rows]
        output: Any = self._predict(self._array(rows, dtype="float64"))
        if not isinstance(output, self._ndarray) or output.ndim < 1 or len(output) != len(rows):
            return [None] * len(batches)
        answers: list[bytes | None] = []
        start = 0
        for part in batches:
            buffer = io.StringIO()
            try:
                self._to_json(output[start : start + len(part)], buffer)
            except Exception:
                answers.append(None)
            else:
                answers.append(buffer.getvalue().encode())
            start += len(part)
        return answers

    def turn_off(self, exc: BaseException) -> None:
        """Send every request MLflow's way from now on: the estimator raised on an array for a
        request that MLflow's way answered."""
        if self.enabled:
            self.enabled = False
            print(
                f"declare.serve: the short way to the model is off: it raised {exc!r} on an "
                "array where MLflow's way answered; requests go MLflow's way",
                file=sys.stderr,
            )
