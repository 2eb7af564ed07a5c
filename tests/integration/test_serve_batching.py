"""Micro-batching in a real `python -m declare.serve`: every caller gets its own rows' answers.

Two models, each served by declare's server with `--max-batch-size 16 --max-delay-ms 5`:
the quickstart's scikit-learn LogisticRegression (its requests take the short way,
`declare.serve.direct`, and are joined as arrays) and a pyfunc with a column schema whose
answer names its row (`1000 * a + b`; joined by `declare.serve.joining` through MLflow's own
parsing). 16 clients send 40 requests each at once, of mixed formats (`dataframe_split` of 1
to 3 rows, `dataframe_records`, int and float values, `instances`, CSV, requests that fail),
each with values of its own; every answer must be the one a lone request gets. The server's
log then says how many predict calls the requests shared (fewer calls than requests: they were
joined). Bounded: 640 requests per model, 60 s timeouts; the servers are stopped by PID.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from declare import procs

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
CLIENTS, REQUESTS = 16, 40
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]

SAVE = r"""
import sys
import mlflow.pyfunc, mlflow.sklearn, pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

class Names(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return (1000 * model_input["a"] + model_input["b"]).to_numpy()

x, y = load_iris(return_X_y=True, as_frame=True)
estimator = LogisticRegression(max_iter=500).fit(x, y)
mlflow.sklearn.save_model(estimator, sys.argv[1] + "/iris",
                          signature=infer_signature(x, estimator.predict(x)))
frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
mlflow.pyfunc.save_model(sys.argv[1] + "/names", python_model=Names(),
                         signature=infer_signature(frame, (1000 * frame.a + frame.b).to_numpy()))
"""


@dataclass(frozen=True)
class Served:
    url: str
    log: Path
    server: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batched")
    subprocess.run([sys.executable, "-c", SAVE, str(folder)], check=True, timeout=300)
    return folder


def _serve(model: Path, log: Path) -> Iterator[Served]:
    port = procs.free_port()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    argv = [
        sys.executable, "-m", "declare.serve", "--model", str(model), "--host", HOST,
        "--port", str(port), "--max-batch-size", "16", "--max-delay-ms", "5",
    ]  # fmt: skip
    with open(log, "w") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Served(url, log, server)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def iris_server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(models / "iris", tmp_path_factory.mktemp("logs") / "iris.log")


@pytest.fixture(scope="module")
def names_server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(models / "names", tmp_path_factory.mktemp("logs") / "names.log")


def _request(columns: list[str], rows: list[list[Any]], kind: str) -> tuple[bytes, str]:
    if kind == "split":
        return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode(), (
            "application/json"
        )
    if kind == "records":
        body = [dict(zip(columns, row, strict=True)) for row in rows]
        return json.dumps({"dataframe_records": body}).encode(), "application/json"
    if kind == "instances":
        body = [dict(zip(columns, row, strict=True)) for row in rows]
        return json.dumps({"instances": body}).encode(), "application/json"
    lines = [",".join(f'"{c}"' for c in columns)] + [",".join(map(str, r)) for r in rows]
    return "\n".join(lines).encode(), "text/csv"


def _load(url: str, columns: list[str], row_of: Any, seed: int) -> list[tuple[Any, ...]]:
    """One client's requests: (kind, rows, status, answer) for each."""
    rng = random.Random(seed)
    seen = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for n in range(REQUESTS):
            kind = rng.choice(["split", "split", "split", "records", "instances", "csv"])
            rows = [row_of(seed, n, i, rng) for i in range(rng.randint(1, 3))]
            if n % 13 == 5:  # a request that fails: a string where the schema wants a double
                rows[0][1] = "not a number"
            body, content_type = _request(columns, rows, kind)
            answer = client.post(
                "/invocations", content=body, headers={"Content-Type": content_type}
            )
            seen.append((kind, rows, answer.status_code, answer.json()))
    return seen


def _all_clients(url: str, columns: list[str], row_of: Any) -> list[tuple[Any, ...]]:
    with ThreadPoolExecutor(CLIENTS) as pool:
        runs = pool.map(lambda seed: _load(url, columns, row_of, seed), range(CLIENTS))
        return [answer for run in runs for answer in run]


def _joined(log: Path) -> tuple[int, int]:
    text = log.read_text()
    found = re.search(r"batching joined (\d+) requests into (\d+) predict calls", text)
    assert found, text
    return int(found[1]), int(found[2])


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


def test_every_caller_of_a_batched_sklearn_replica_gets_its_own_rows_answers(
    iris_server: Served, models: Path
) -> None:
    import mlflow.pyfunc
    import pandas as pd

    url, log = iris_server.url, iris_server.log
    model = mlflow.pyfunc.load_model(str(models / "iris"))

    def row_of(seed: int, n: int, i: int, rng: random.Random) -> list[Any]:
        row = [round(rng.uniform(4, 8), 1), round(rng.uniform(2, 4.5), 1),
               round(rng.uniform(1, 7), 1), round(rng.uniform(0.1, 2.5), 1)]  # fmt: skip
        return [int(v) for v in row] if (seed + n) % 5 == 0 else row  # ints too

    answers = _all_clients(url, COLUMNS, row_of)
    assert len(answers) == CLIENTS * REQUESTS
    failed = 0
    for kind, rows, status, body in answers:
        if any(isinstance(v, str) for v in rows[0]):
            assert status == 400 and body["error_code"] == "BAD_REQUEST", (kind, rows, body)
            failed += 1
            continue
        expected = model.predict(pd.DataFrame(rows, columns=COLUMNS).astype("float64"))
        assert (status, body) == (200, {"predictions": expected.tolist()}), (kind, rows)
    assert failed > 0
    _stop(iris_server.server)
    requests, calls = _joined(log)
    assert calls < requests, (requests, calls)  # requests shared predict calls


def test_every_caller_of_a_batched_pyfunc_replica_gets_its_own_rows_answers(
    names_server: Served,
) -> None:
    url, log = names_server.url, names_server.log

    def row_of(seed: int, n: int, i: int, rng: random.Random) -> list[Any]:
        return [float(seed * 100 + n), float(i)]  # the answer names the client, request, row

    answers = _all_clients(url, ["a", "b"], row_of)
    failed = 0
    for kind, rows, status, body in answers:
        if any(isinstance(v, str) for v in rows[0]):
            assert status == 400, (kind, rows, body)
            failed += 1
            continue
        expected = [1000 * a + b for a, b in rows]
        assert (status, body) == (200, {"predictions": expected}), (kind, rows)
    assert failed > 0
    _stop(names_server.server)
    requests, calls = _joined(log)
    assert calls < requests, (requests, calls)
