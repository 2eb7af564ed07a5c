"""Tiny MLflow models for the differential test of `declare.serve` (test_serve_parity.py).

`save(name, folder)` saves the model `name` (one of `MODELS`) to `folder/name` and returns
that path. Each model is small enough to load in a second or two:

- `iris`: scikit-learn LogisticRegression on the iris data, with a signature inferred from
  the data (double columns named like "sepal length (cm)") and a 3-row input example.
- `tensor`: a pyfunc whose signature is a float32 tensor of shape (-1, 4) in, (-1,) out; it
  answers each row's sum as a numpy array.
- `params`: a pyfunc with a column `x` (double) and the params `scale` (double, 1.0) and
  `mode` (string, "a"); it answers `x * scale` and `mode` for every row, so a param that is
  dropped or mistyped on the way shows in the answer.
- `outputs`: a pyfunc with no signature. A DataFrame with a column `kind` selects one of the
  values of `OUTPUT_KINDS` (a DataFrame, a list, a dict, numpy arrays and scalars, ...), to
  check that each output type is serialized the same way; any other input is answered as it
  reached `predict` (a DataFrame, a numpy array, a dict of arrays, ...), which shows how the
  request was parsed.
- `raiser`: a pyfunc with no signature whose `predict` raises what the column `kind` names
  (`RAISE_KINDS`): a ValueError, a KeyError, or an MlflowException with an error code (whose
  HTTP status MLflow's server answers).
- `typed`: a pyfunc whose signature comes from its type hints (`list[str]` in and out), the
  path of MLflow's server where the data is not parsed and `inputs` is required.

The PythonModel classes are pickled by value (cloudpickle), so the servers load them from
the model's folder alone, whatever their working directory and sys.path.

This module has no `from __future__ import annotations`: MLflow reads the type hints of
`TypedModel.predict` as objects. The other `predict` methods are untyped on purpose, since
MLflow infers a signature from (and validates inputs against) type hints.
"""

import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

MODELS = ("iris", "tensor", "params", "outputs", "raiser", "typed")

OUTPUT_KINDS: dict[str, Any] = {
    "dataframe": pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [0.5, None]}),
    "empty_dataframe": pd.DataFrame(),
    "series": pd.Series([1.5, 2.5], name="s"),
    "list": [1, "two", 3.0, None, True],
    "dict": {"a": 1, "b": [1, 2], "c": {"d": "e"}},
    "ndarray_2d": np.arange(6).reshape(2, 3),
    "float32": np.array([0.1, 0.2], dtype=np.float32),
    "numpy_scalar": np.int64(7),
    "numpy_values_in_dict": {"f": np.float64(1.5), "i": np.int32(3), "b": np.bool_(True)},
    "dict_of_arrays": {"x": np.array([1, 2]), "y": np.array([[1.0, 2.0]])},
    "string": "hello",
    "unicode": "h\u00e9llo \u2603",
    "none": None,
    "nan_inf": [float("nan"), float("inf"), -float("inf")],
    "timestamps": pd.DataFrame(
        {"t": pd.to_datetime(["2024-01-02 00:00:00", "2024-03-04 05:06:07"])}
    ),
    "bytes": b"\x00\xffab",
}

RAISE_KINDS = (
    "value_error",
    "key_error",
    "multiline_error",
    "mlflow_default",
    "mlflow_invalid_parameter",
    "mlflow_not_found",
    "mlflow_resource_exhausted",
    "mlflow_permission_denied",
    "mlflow_temporarily_unavailable",
)


def _mlflow_version_pin() -> list[str]:
    # Explicit requirements: MLflow's inference of them loads each model in a child process.
    import mlflow

    return [f"mlflow=={mlflow.__version__}"]


def _classes() -> dict[str, type[Any]]:
    """The PythonModel subclasses (defined here so importing this module stays cheap)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.model import PythonModel

    class TensorSum(PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return np.asarray(model_input).sum(axis=1)

    class ScaledWithParams(PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            params = params or {}
            scale = params.get("scale", "missing")
            mode = params.get("mode", "missing")
            return pd.DataFrame(
                {
                    "y": [x * scale for x in model_input["x"]],
                    "mode": [mode] * len(model_input),
                    "params": [repr(sorted(params.items()))] * len(model_input),
                }
            )

    class OutputOfKind(PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            if isinstance(model_input, pd.DataFrame) and "kind" in model_input.columns:
                kind = model_input["kind"].iloc[0]
                if kind == "params":
                    return {"params": params}
                return OUTPUT_KINDS[kind]
            return model_input

    class Raiser(PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            kind = model_input["kind"].iloc[0]
            if kind == "value_error":
                raise ValueError(f"bad input: {len(model_input)} rows")
            if kind == "key_error":
                raise KeyError("no such feature")
            if kind == "multiline_error":
                raise RuntimeError("first line\nsecond line")
            codes = {
                "mlflow_default": None,
                "mlflow_invalid_parameter": "INVALID_PARAMETER_VALUE",
                "mlflow_not_found": "RESOURCE_DOES_NOT_EXIST",
                "mlflow_resource_exhausted": "RESOURCE_EXHAUSTED",
                "mlflow_permission_denied": "PERMISSION_DENIED",
                "mlflow_temporarily_unavailable": "TEMPORARILY_UNAVAILABLE",
            }
            if kind in codes:
                from mlflow.protos import databricks_pb2

                code = codes[kind]
                if code is None:
                    raise MlflowException(f"custom failure ({kind})")
                raise MlflowException(
                    f"custom failure ({kind})", error_code=getattr(databricks_pb2, code)
                )
            return model_input

    class TypedModel(PythonModel):
        # No `context`: MLflow allows it, and its type hints are those of the signature.
        def predict(  # type: ignore[override]
            self, model_input: list[str], params: dict[str, Any] | None = None
        ) -> list[str]:
            return [s.upper() for s in model_input]

    return {
        "tensor": TensorSum,
        "params": ScaledWithParams,
        "outputs": OutputOfKind,
        "raiser": Raiser,
        "typed": TypedModel,
    }


def save(name: str, folder: Path) -> Path:
    """Save the model `name` to `folder/name` (a new folder) and return that path."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    path = folder / name
    requirements = _mlflow_version_pin()
    if name == "iris":
        import sklearn
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        features, target = load_iris(return_X_y=True, as_frame=True)
        estimator = LogisticRegression(max_iter=500).fit(features, target)
        mlflow.sklearn.save_model(
            estimator,
            str(path),
            signature=infer_signature(features, estimator.predict(features)),
            input_example=features.head(3),
            pip_requirements=[*requirements, f"scikit-learn=={sklearn.__version__}"],
        )
        return path

    # By value: the servers do not import this module (nor have it on their sys.path).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    python_model = _classes()[name]()
    signatures: dict[str, ModelSignature | None] = {
        "tensor": ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 4))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]),
        ),
        "params": ModelSignature(
            inputs=Schema([ColSpec("double", "x")]),
            outputs=Schema(
                [ColSpec("double", "y"), ColSpec("string", "mode"), ColSpec("string", "params")]
            ),
            params=ParamSchema(
                [ParamSpec("scale", "double", 1.0), ParamSpec("mode", "string", "a")]
            ),
        ),
        "outputs": None,
        "raiser": None,
    }
    if name == "typed":
        # The signature comes from the type hints of `predict`.
        mlflow.pyfunc.save_model(
            str(path), python_model=python_model, pip_requirements=requirements
        )
    else:
        mlflow.pyfunc.save_model(
            str(path),
            python_model=python_model,
            signature=signatures[name],
            pip_requirements=requirements,
        )
    return path


def main(argv: list[str]) -> None:
    """`python -m tests.integration.serve_models FOLDER`: save every model into FOLDER."""
    import warnings

    warnings.filterwarnings("ignore")
    folder = Path(argv[0])
    for name in MODELS:
        save(name, folder)


if __name__ == "__main__":
    main(sys.argv[1:])
