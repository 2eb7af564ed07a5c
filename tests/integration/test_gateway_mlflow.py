"""The gateway in front of a real MLflow scoring server (`mlflow models serve`).

A tiny scikit-learn model is logged with an input example into an MLflow registry backed by
sqlite in tmp_path, served with `--env-manager local`, and called through the gateway in
every input format Databricks and MLflow accept.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from declare import procs
from declare.gateway.process import GatewayRecord, start_gateway, stop_gateway
from declare.gateway.table import RoutingTable

pytestmark = pytest.mark.integration


def log_iris_model(tmp_path: Path) -> str:
    """Train and register `iris` v1; return the tracking URI (sqlite)."""
    script = f"""
import mlflow, mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True, as_frame=True)
X.columns = ["sl", "sw", "pl", "pw"]
mlflow.set_tracking_uri({f"sqlite:///{tmp_path / 'mlflow.db'}"!r})
exp = mlflow.create_experiment("iris", artifact_location={(tmp_path / "artifacts").as_uri()!r})
with mlflow.start_run(experiment_id=exp):
    model = LogisticRegression(max_iter=300).fit(X, y)
    mlflow.sklearn.log_model(model, name="model", input_example=X.head(2),
                             registered_model_name="iris")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayRecord, str]]:
    tmp_path = tmp_path_factory.mktemp("mlflow")
    tracking_uri = log_iris_model(tmp_path)
    port = procs.free_port()
    env = procs.venv_path_env(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/iris/1",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log_path = tmp_path / "replica.log"
    replica = procs.start_detached(argv, log_path, env, cwd=tmp_path)
    state_dir = tmp_path / "state"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert procs.is_running(replica), procs.log_tail(log_path)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, procs.log_tail(log_path)
            time.sleep(0.2)
        record = start_gateway(
            state_dir, "127.0.0.1", procs.free_port(exclude=frozenset({port})), auth_token=None
        )
        table = {
            "version": 1,
            "endpoints": {
                "iris": {
                    "routes": [{"served_entity_name": "iris-1", "traffic_percentage": 100}],
                    "entities": {
                        "iris-1": {
                            "replicas": [{"id": "iris-1-a", "url": f"http://127.0.0.1:{port}"}]
                        }
                    },
                }
            },
        }
        record.client().put_table(RoutingTable.from_json(table))
        yield record, f"http://127.0.0.1:{port}"
    finally:
        stop_gateway(state_dir, grace_seconds=5)
        procs.stop(replica, grace_seconds=10)


ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
COLUMNS = ["sl", "sw", "pl", "pw"]
JSON_BODIES: list[tuple[str, Any]] = [
    ("dataframe_split", {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}),
    (
        "dataframe_records",
        {"dataframe_records": [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]},
    ),
    ("instances", {"instances": [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]}),
    ("inputs", {"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)}}),
]


@pytest.mark.parametrize(("fmt", "body"), JSON_BODIES, ids=[f for f, _ in JSON_BODIES])
def test_every_json_format_gets_the_replicas_predictions(
    served: tuple[GatewayRecord, str], fmt: str, body: Any
) -> None:
    record, replica = served
    via_gateway = httpx.post(f"{record.base_url}/serving-endpoints/iris/invocations", json=body)
    direct = httpx.post(f"{replica}/invocations", json=body)
    assert via_gateway.status_code == 200, via_gateway.text
    assert via_gateway.headers["served-model-name"] == "iris-1"
    assert via_gateway.content == direct.content
    assert via_gateway.headers["content-type"] == direct.headers["content-type"]
    assert via_gateway.json() == {"predictions": [0, 2]}


def test_csv_gets_the_replicas_predictions(served: tuple[GatewayRecord, str]) -> None:
    record, _ = served
    csv = "sl,sw,pl,pw\n" + "\n".join(",".join(map(str, r)) for r in ROWS) + "\n"
    response = httpx.post(
        f"{record.base_url}/serving-endpoints/iris/invocations",
        content=csv,
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["served-model-name"] == "iris-1"
    assert response.json() == {"predictions": [0, 2]}


def test_the_replicas_own_errors_pass_through(served: tuple[GatewayRecord, str]) -> None:
    record, replica = served
    body = {"not_a_format": [1, 2]}
    via_gateway = httpx.post(f"{record.base_url}/serving-endpoints/iris/invocations", json=body)
    direct = httpx.post(f"{replica}/invocations", json=body)
    assert via_gateway.status_code == direct.status_code == 400
    assert via_gateway.json() == direct.json()
    assert via_gateway.json()["error_code"] == "BAD_REQUEST"
