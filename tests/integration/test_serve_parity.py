"""`python -m declare.serve` answers exactly what MLflow's own scoring server answers.

A differential test: for each model of `tests/integration/serve_models.py`, MLflow's server
(`mlflow models serve --env-manager local -w 1`, uvicorn running
`mlflow.pyfunc.scoring_server.app:app`) and declare's (`python -m declare.serve --model PATH`)
are started once, as real processes on free ports of 127.0.0.1, and every request of that
model's table (`CASES`) is sent to both with a plain HTTP client (http.client: no header but
Host, Accept-Encoding: identity, Content-Length and the case's Content-Type). Compared:

- the status code;
- the media type of Content-Type (its parameters, such as Starlette's charset, are not);
- `Allow` (of a 405) and the path of `Location` (of a redirect), when either server sends
  them;
- the body: as parsed JSON when both bodies are JSON, with ints, floats, bools and strings
  kept apart (1, 1.0 and true are different answers) and NaN/Infinity compared as such, or
  else byte for byte. In an error body every field but `stack_trace` is compared exactly
  (`error_code`, `message`, ...); a `stack_trace`, whose file paths and line numbers depend
  on the server, must be there in both or in neither, with the same last line (the
  exception's type and message).

Not compared: `Date`, `Server`, `Content-Length` (the body is) and the other headers a
server sends of its own accord. Both servers run with PYTHONHASHSEED=0: MLflow's messages
list sets of strings, whose order changes with the seed. With that, two MLflow servers give
the same answer to every case here; a difference is declare's. Each (model, request) pair is
a test id, e.g. `test_same_answer[iris-csv_no_header]`; a failure shows the request and both
answers.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from declare import procs
from tests.integration.serve_models import MODELS, OUTPUT_KINDS, RAISE_KINDS

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
READY_SECONDS = 90.0  # the machine may be busy: a cold MLflow import takes a while
REQUEST_SECONDS = 60.0
JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"


# --- the requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request: sent as is to both servers."""

    name: str
    body: bytes = b""
    content_type: str | None = JSON
    method: str = "POST"
    path: str = "/invocations"

    def describe(self) -> str:
        body = self.body if len(self.body) <= 600 else self.body[:600] + b"..."
        return f"{self.method} {self.path} Content-Type: {self.content_type!r} body: {body!r}"


def js(name: str, payload: Any, content_type: str | None = JSON) -> Case:
    """A POST /invocations of `payload` as JSON."""
    return Case(name, json.dumps(payload).encode(), content_type)


def raw(name: str, body: bytes, content_type: str | None) -> Case:
    """A POST /invocations of exactly these bytes."""
    return Case(name, body, content_type)


def call(name: str, method: str, path: str) -> Case:
    """A request with no body and no Content-Type."""
    return Case(name, b"", None, method, path)


def parquet_bytes(columns: list[str], rows: list[list[float]]) -> bytes:
    import pandas as pd

    out = io.BytesIO()
    pd.DataFrame(rows, columns=columns).to_parquet(out)
    return out.getvalue()


def frame_records(columns: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def frame_formats(columns: list[str], rows: list[list[Any]]) -> list[Case]:
    """The same rows in each JSON format of the scoring protocol."""
    records = frame_records(columns, rows)
    by_column = {c: [row[i] for row in rows] for i, c in enumerate(columns)}
    return [
        js("dataframe_split", {"dataframe_split": {"columns": columns, "data": rows}}),
        js(
            "dataframe_split_with_index",
            {"dataframe_split": {"index": [7, 9][: len(rows)], "columns": columns, "data": rows}},
        ),
        js("dataframe_records", {"dataframe_records": records}),
        js("instances_rows", {"instances": rows}),
        js("instances_dicts", {"instances": records}),
        js("inputs_rows", {"inputs": rows}),
        js("inputs_columns", {"inputs": by_column}),
    ]


IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
IRIS_SPLIT = {"columns": IRIS_COLUMNS, "data": IRIS_ROWS}
IRIS_BODY = json.dumps({"dataframe_split": IRIS_SPLIT}).encode()
IRIS_CSV = (",".join(IRIS_COLUMNS) + "\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n").encode()

IRIS_CASES = [
    *frame_formats(IRIS_COLUMNS, IRIS_ROWS),
    js(
        "one_row_records",
        {"dataframe_records": [dict(zip(IRIS_COLUMNS, IRIS_ROWS[0], strict=True))]},
    ),
    # params (the model has no param schema)
    js("params_unknown", {"dataframe_split": IRIS_SPLIT, "params": {"x": 1}}),
    js("params_not_an_object", {"dataframe_split": IRIS_SPLIT, "params": [1, 2]}),
    js("params_null", {"dataframe_split": IRIS_SPLIT, "params": None}),
    # CSV
    raw("csv_header", IRIS_CSV, CSV),
    raw("csv_header_charset", IRIS_CSV, "text/csv; charset=utf-8"),
    raw("csv_no_header", b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n", CSV),
    raw("csv_string_for_double", IRIS_CSV.replace(b"6.7", b"abc"), CSV),
    raw("csv_ragged", (",".join(IRIS_COLUMNS) + "\n1,2\n1,2,3,4,5,6\n").encode(), CSV),
    raw("csv_unterminated_quote", b'"sepal length (cm)\n5.1\n', CSV),
    raw("csv_not_utf8", IRIS_CSV + b"\xff\xfe\n", CSV),
    raw("csv_empty", b"", CSV),
    # Parquet
    raw("parquet", parquet_bytes(IRIS_COLUMNS, IRIS_ROWS), PARQUET),
    raw("parquet_bad_bytes", b"PAR1 this is not parquet", PARQUET),
    # Content-Type and its parameters
    raw("json_charset_utf8", IRIS_BODY, "application/json; charset=utf-8"),
    raw("json_charset_utf8_upper", IRIS_BODY, "application/json; charset=UTF-8"),
    raw("json_charset_quoted", IRIS_BODY, 'application/json; charset="utf-8"'),
    raw("json_charset_latin1", IRIS_BODY, "application/json; charset=latin-1"),
    raw("json_unknown_parameter", IRIS_BODY, "application/json; format=pandas-split"),
    raw("json_parameter_without_value", IRIS_BODY, "application/json; charset"),
    raw("json_spaces_around", IRIS_BODY, " application/json ;  charset=utf-8 "),
    raw("json_media_type_upper", IRIS_BODY, "Application/JSON"),
    raw("text_plain", IRIS_BODY, "text/plain"),
    raw("content_type_empty", IRIS_BODY, ""),
    raw("no_content_type", IRIS_BODY, None),
    # bodies that are not a request of the protocol
    raw("malformed_json", b'{"dataframe_split": {"columns": [', JSON),
    raw("json_list", b"[[5.1, 3.5, 1.4, 0.2]]", JSON),
    raw("json_number", b"42", JSON),
    raw("json_string", b'"dataframe_split"', JSON),
    raw("json_null", b"null", JSON),
    js(
        "two_format_keys",
        {"dataframe_split": IRIS_SPLIT, "instances": IRIS_ROWS},
    ),
    js("no_format_key", {"data": IRIS_ROWS}),
    js("empty_object", {}),
    js("extra_top_level_key", {"dataframe_split": IRIS_SPLIT, "extra": 1}),
    js("llm_prompt", {"prompt": "hello"}),
    js("dataframe_split_not_an_object", {"dataframe_split": IRIS_ROWS}),
    js("dataframe_records_not_a_list", {"dataframe_records": {"a": 1}}),
    raw("not_utf8", b'{"dataframe_split": "\xff\xfe"}', JSON),
    raw("utf8_bom", b"\xef\xbb\xbf" + IRIS_BODY, JSON),
    raw("empty_body", b"", JSON),
    # the schema
    js(
        "missing_column",
        {"dataframe_split": {"columns": IRIS_COLUMNS[:3], "data": [r[:3] for r in IRIS_ROWS]}},
    ),
    js(
        "string_for_double",
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [["a", 3.5, 1.4, 0.2]]}},
    ),
    js(
        "int_for_double",
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5, 3, 1, 0]]}},
    ),
    js(
        "null_for_double",
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[None, 3.5, 1.4, 0.2]]}},
    ),
    js(
        "extra_column",
        {"dataframe_split": {"columns": [*IRIS_COLUMNS, "z"], "data": [[*IRIS_ROWS[0], 1.0]]}},
    ),
    js("empty_data", {"dataframe_split": {"columns": IRIS_COLUMNS, "data": []}}),
    js("empty_instances", {"instances": []}),
    # the paths
    call("get_ping", "GET", "/ping"),
    call("get_health", "GET", "/health"),
    call("get_version", "GET", "/version"),
    call("head_ping", "HEAD", "/ping"),
    call("post_ping", "POST", "/ping"),
    call("get_invocations", "GET", "/invocations"),
    call("put_invocations", "PUT", "/invocations"),
    call("post_nope", "POST", "/nope"),
    call("get_root", "GET", "/"),
    call("get_ping_trailing_slash", "GET", "/ping/"),
    Case("post_invocations_trailing_slash", IRIS_BODY, JSON, "POST", "/invocations/"),
    # FastAPI's own pages of MLflow's app: test_fastapis_own_pages_are_the_one_documented_difference
    Case("invocations_query_string", IRIS_BODY, JSON, "POST", "/invocations?x=1"),
]

TENSOR_ROWS = [[1.0, 2.0, 3.0, 4.0], [0.5, 0.25, 0.125, 0.0625]]
TENSOR_CASES = [
    *frame_formats(["a", "b", "c", "d"], TENSOR_ROWS),
    js("inputs_named_tensor", {"inputs": {"x": TENSOR_ROWS}}),
    js("instances_one_row_flat", {"instances": TENSOR_ROWS[0]}),
    js("instances_wrong_width", {"instances": [[1.0, 2.0, 3.0]]}),
    js("instances_ints", {"instances": [[1, 2, 3, 4]]}),
    js("instances_strings", {"instances": [["a", "b", "c", "d"]]}),
    js("instances_too_deep", {"instances": [[[1.0, 2.0, 3.0, 4.0]]]}),
    js("instances_ragged", {"instances": [[1.0, 2.0, 3.0, 4.0], [1.0]]}),
    js("empty_instances", {"instances": []}),
    js("params_unknown", {"instances": TENSOR_ROWS, "params": {"x": 1}}),
    raw("csv_header", b"a,b,c,d\n1.0,2.0,3.0,4.0\n", CSV),
    raw("csv_no_header", b"1.0,2.0,3.0,4.0\n", CSV),
]

PARAMS_ROWS = [[1.5], [-2.0]]
PARAMS_SPLIT = {"columns": ["x"], "data": PARAMS_ROWS}
PARAMS_CASES = [
    *frame_formats(["x"], PARAMS_ROWS),
    js("params_known", {"dataframe_split": PARAMS_SPLIT, "params": {"scale": 2.5, "mode": "b"}}),
    js("params_partial", {"dataframe_split": PARAMS_SPLIT, "params": {"mode": "b"}}),
    js("params_unknown", {"dataframe_split": PARAMS_SPLIT, "params": {"other": 1}}),
    js("params_wrong_type", {"dataframe_split": PARAMS_SPLIT, "params": {"scale": "big"}}),
    js("params_int_for_double", {"dataframe_split": PARAMS_SPLIT, "params": {"scale": 2}}),
    js("params_bool_for_double", {"dataframe_split": PARAMS_SPLIT, "params": {"scale": True}}),
    js("params_number_for_string", {"dataframe_split": PARAMS_SPLIT, "params": {"mode": 3}}),
    js("params_list_for_double", {"dataframe_split": PARAMS_SPLIT, "params": {"scale": [1.0]}}),
    js("params_null", {"dataframe_split": PARAMS_SPLIT, "params": None}),
    js("params_not_an_object", {"dataframe_split": PARAMS_SPLIT, "params": [2.5]}),
    js("params_with_records", {"dataframe_records": [{"x": 1.0}], "params": {"scale": 3.0}}),
    js("params_with_instances", {"instances": [{"x": 1.0}], "params": {"scale": 3.0}}),
    js("params_with_inputs", {"inputs": {"x": [1.0]}, "params": {"scale": 3.0}}),
    js("params_only", {"params": {"scale": 3.0}}),
    js("llm_prompt_with_param", {"prompt": "hi", "scale": 2.0, "other": 1}),
    raw("csv_params_ignored", b"x\n1.5\n", CSV),
]

OUTPUTS_CASES = [
    *(js(f"output_{kind}", {"dataframe_records": [{"kind": kind}]}) for kind in OUTPUT_KINDS),
    js("output_params", {"dataframe_records": [{"kind": "params"}], "params": {"p": 1}}),
    # no signature: the model answers its input as it reached predict (how it was parsed)
    *frame_formats(["a", "b"], [[1, "x"], [2.5, None]]),
    js("records_nested_values", {"dataframe_records": [{"a": [1, 2], "b": {"c": True}}]}),
    js("records_missing_keys", {"dataframe_records": [{"a": 1}, {"b": 2}]}),
    js("records_big_int", {"dataframe_records": [{"a": 2**63}, {"a": -(2**63)}]}),
    js("inputs_scalar", {"inputs": 5}),
    js("inputs_string", {"inputs": "text"}),
    js("inputs_nested_lists", {"inputs": [[[1, 2], [3, 4]]]}),
    js("instances_strings", {"instances": ["a", "b"]}),
    js("instances_ragged", {"instances": [[1, 2], [3]]}),
    js("inputs_mixed_columns", {"inputs": {"a": [1, 2], "b": ["x"]}}),
    js("empty_data", {"dataframe_split": {"columns": ["a"], "data": []}}),
    js("split_without_columns", {"dataframe_split": {"data": [[1, 2]]}}),
    js("split_width_mismatch", {"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}),
    js("llm_prompt", {"prompt": "hello", "max_tokens": 3}),
    js("llm_messages", {"messages": [{"role": "user", "content": "hi"}]}),
    js("llm_input", {"input": ["a", "b"]}),
    raw("csv_header", b"a,b\n1,x\n2.5,\n", CSV),
    raw("csv_no_header", b"1,x\n2.5,y\n", CSV),
    raw("csv_only_header", b"a,b\n", CSV),
]

RAISER_CASES = [js(kind, {"dataframe_records": [{"kind": kind}]}) for kind in RAISE_KINDS]

TYPED_CASES = [
    js("inputs_strings", {"inputs": ["a", "b"]}),
    js("inputs_ints", {"inputs": [1, 2]}),
    js("inputs_not_a_list", {"inputs": "a"}),
    js("inputs_with_params", {"inputs": ["a"], "params": {"x": 1}}),
    js("instances", {"instances": ["a", "b"]}),
    js("dataframe_split", {"dataframe_split": {"columns": ["s"], "data": [["a"]]}}),
    js("no_format_key", {"data": ["a"]}),
    js("llm_prompt", {"prompt": "hello"}),
    raw("csv_header", b"s\na\n", CSV),
]

CASES: dict[str, list[Case]] = {
    "iris": IRIS_CASES,
    "tensor": TENSOR_CASES,
    "params": PARAMS_CASES,
    "outputs": OUTPUTS_CASES,
    "raiser": RAISER_CASES,
    "typed": TYPED_CASES,
}
assert set(CASES) == set(MODELS)
for _cases in CASES.values():
    _names = [c.name for c in _cases]
    assert len(_names) == len(set(_names)), f"duplicate case names: {_names}"

# Listed model by model, and run in this order: the servers of a model are started before its
# first case and stopped before the next model's are started (see `ServerPool`).
PAIRS = [pytest.param(m, c, id=f"{m}-{c.name}") for m in MODELS for c in CASES[m]]


# --- the answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str | None
    headers: dict[str, str]  # the compared ones besides Content-Type (lower-case names)
    body: bytes

    @property
    def media_type(self) -> str | None:
        if self.content_type is None:
            return None
        return self.content_type.split(";", 1)[0].strip().lower()

    def describe(self) -> str:
        body = self.body if len(self.body) <= 3000 else self.body[:3000] + b"..."
        headers = "".join(f" {k}: {v!r}" for k, v in sorted(self.headers.items()))
        return f"{self.status} Content-Type: {self.content_type!r}{headers} body: {body!r}"


def send(port: int, case: Case) -> Answer:
    """The case sent to 127.0.0.1:port; a fresh connection for each request."""
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_SECONDS)
    try:
        headers = {} if case.content_type is None else {"Content-Type": case.content_type}
        body = case.body if case.method not in ("GET", "HEAD") or case.body else None
        conn.request(case.method, case.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        compared: dict[str, str] = {}
        if (allow := response.getheader("allow")) is not None:
            compared["allow"] = allow
        if (location := response.getheader("location")) is not None:
            parts = urlsplit(location)  # the host and port differ from one server to the other
            compared["location (path)"] = parts.path + (f"?{parts.query}" if parts.query else "")
        return Answer(response.status, response.getheader("content-type"), compared, data)
    finally:
        conn.close()


def _last_line(trace: Any) -> Any:
    if not isinstance(trace, str):
        return tagged(trace)
    lines = [line for line in trace.splitlines() if line.strip()]
    return ("stack trace ending", lines[-1] if lines else "")


def tagged(value: Any) -> Any:
    """`value` (parsed JSON) with each scalar tagged by its JSON type: `1`, `1.0` and `true`
    are equal in Python but are different answers. NaN is compared as the string "NaN"."""
    if isinstance(value, dict):
        return {key: tagged(item) for key, item in value.items()}
    if isinstance(value, list):
        return [tagged(item) for item in value]
    if isinstance(value, float):
        return ("float", "NaN" if math.isnan(value) else repr(value))
    if value is None:
        return None
    return (type(value).__name__, value)


def comparable(body: bytes) -> Any:
    """What is compared of a body (see the module's docstring)."""
    try:
        value = json.loads(body)
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        return ("bytes", body)
    if isinstance(value, dict) and "stack_trace" in value:
        return {
            **tagged({k: v for k, v in value.items() if k != "stack_trace"}),
            "stack_trace": _last_line(value["stack_trace"]),
        }
    return tagged(value)


def differences(expected: Answer, actual: Answer) -> list[str]:
    found = []
    if expected.status != actual.status:
        found.append(f"status {expected.status} != {actual.status}")
    if expected.media_type != actual.media_type:
        found.append(f"media type {expected.media_type!r} != {actual.media_type!r}")
    if expected.headers != actual.headers:
        found.append(f"headers {expected.headers} != {actual.headers}")
    if comparable(expected.body) != comparable(actual.body):
        found.append("body")
    return found


# --- the servers --------------------------------------------------------------------------


class NotReady(Exception):
    """A server exited, or gave no 200 on GET /ping in time (the message has its log)."""


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    log: Path
    proc: procs.ProcessId | None = field(default=None)

    def start(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = procs.start_detached(self.argv, self.log, env, cwd=cwd)

    def stop(self) -> None:
        """By its recorded identity (PID and start time), with its process group."""
        if self.proc is not None:
            procs.stop(self.proc, grace_seconds=10.0)

    def ready(self) -> bool:
        """True once GET /ping answers 200; NotReady if the process is gone."""
        assert self.proc is not None
        if not procs.is_running(self.proc):
            raise NotReady(f"{self.name} exited before answering GET /ping:\n{self.tail()}")
        try:
            return send(self.port, call("ping", "GET", "/ping")).status == 200
        except OSError:  # not listening yet (or a read timed out)
            return False

    def tail(self) -> str:
        return f"$ {' '.join(self.argv)}\n{procs.log_tail(self.log, lines=60)}"


@dataclass(frozen=True)
class Servers:
    mlflow: Server
    declare: Server
    batched: Server  # declare's with micro-batching on: the same answers

    def stop(self) -> None:
        self.batched.stop()
        self.declare.stop()
        self.mlflow.stop()


def server_env() -> dict[str, str]:
    """The same environment for both servers: no MLflow setting of the caller's, the venv's
    bin first on PATH (MLflow runs `uvicorn` by name), and one hash seed. MLflow's messages
    list sets of strings (the input fields of the protocol, a schema's extra columns), whose
    order changes with the seed: two MLflow servers with different seeds differ there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONHASHSEED"] = "0"
    return procs.venv_path_env(env)


def start_servers(model: Path, workdir: Path) -> Servers:
    """MLflow's scoring server and declare's for the model saved at `model`, both ready."""
    workdir.mkdir(exist_ok=True)
    mlflow_port = procs.free_port(HOST)
    declare_port = procs.free_port(HOST, exclude=frozenset({mlflow_port}))
    batched_port = procs.free_port(HOST, exclude=frozenset({mlflow_port, declare_port}))
    pair = Servers(
        mlflow=Server(
            "mlflow models serve",
            [
                str(Path(sys.executable).parent / "mlflow"),
                *("models", "serve", "-m", str(model), "-h", HOST, "-p", str(mlflow_port)),
                *("--env-manager", "local", "-w", "1"),
            ],
            mlflow_port,
            workdir / "mlflow.log",
        ),
        declare=Server(
            "python -m declare.serve",
            [
                *(sys.executable, "-m", "declare.serve", "--model", str(model)),
                *("--host", HOST, "--port", str(declare_port)),
            ],
            declare_port,
            workdir / "declare.log",
        ),
        batched=Server(
            "python -m declare.serve --max-batch-size 8",
            [
                *(sys.executable, "-m", "declare.serve", "--model", str(model)),
                *("--host", HOST, "--port", str(batched_port), "--max-batch-size", "8"),
            ],
            batched_port,
            workdir / "batched.log",
        ),
    )
    env = server_env()
    started = time.monotonic()
    try:
        for server in (pair.mlflow, pair.declare, pair.batched):
            server.start(env, cwd=workdir)
        waiting = [pair.mlflow, pair.declare, pair.batched]
        while waiting:
            waiting = [s for s in waiting if not s.ready()]
            if waiting and time.monotonic() - started > READY_SECONDS:
                raise NotReady(
                    f"no 200 on GET /ping in {READY_SECONDS:g} s from "
                    + "\n".join(f"{s.name}:\n{s.tail()}" for s in waiting)
                )
            time.sleep(0.2 if waiting else 0)
    except BaseException:
        pair.stop()
        raise
    print(f"\n[serve_parity] {model.name}: both servers ready in {time.monotonic() - started:.1f}s")
    return pair


class ServerPool:
    """The servers of one model at a time: `servers(name)` starts them on the first case of
    the model and stops the previous model's. A model whose servers did not start fails its
    other cases at once, with the same message."""

    def __init__(self, models: Path) -> None:
        self.models = models
        self.current: tuple[str, Servers] | None = None
        self.failed: dict[str, str] = {}

    def servers(self, name: str) -> Servers:
        if self.current is not None and self.current[0] == name:
            return self.current[1]
        self.close()
        if name in self.failed:
            pytest.fail(self.failed[name], pytrace=False)
        try:
            pair = start_servers(self.models / name, self.models / f"{name}-servers")
        except NotReady as exc:
            self.failed[name] = f"the servers of model {name!r} did not start: {exc}"
            pytest.fail(self.failed[name], pytrace=False)
        self.current = (name, pair)
        return pair

    def close(self) -> None:
        if self.current is not None:
            current, self.current = self.current[1], None
            current.stop()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every model of serve_models saved here, by a child Python process (nothing of MLflow
    is imported into the test process)."""
    folder = tmp_path_factory.mktemp("serve-models")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.serve_models", str(folder)],
        cwd=REPO_ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"saving the models failed:\n{done.stderr[-4000:]}")
    print(f"\n[serve_parity] models saved in {time.monotonic() - started:.1f}s at {folder}")
    return folder


@pytest.fixture(scope="module")
def pool(model_folder: Path) -> Iterator[ServerPool]:
    servers = ServerPool(model_folder)
    try:
        yield servers
    finally:
        servers.close()


@pytest.mark.parametrize(("model", "case"), PAIRS)
def test_same_answer(pool: ServerPool, model: str, case: Case) -> None:
    servers = pool.servers(model)
    expected = send(servers.mlflow.port, case)
    for server in (servers.declare, servers.batched):
        actual = send(server.port, case)
        found = differences(expected, actual)
        assert not found, (
            f"{server.name} answers differently ({', '.join(found)})\n"
            f"request: {case.describe()}\n"
            f"mlflow:  {expected.describe()}\n"
            f"declare: {actual.describe()}"
        )


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_fastapis_own_pages_are_the_one_documented_difference(pool: ServerPool, path: str) -> None:
    """MLflow's app is a FastAPI app, which adds API docs pages of its own; they are no part of
    MLflow's scoring protocol, and declare's server does not serve them (404, the JSON of any
    unknown path)."""
    servers = pool.servers("iris")
    case = call(path.strip("/"), "GET", path)
    assert send(servers.mlflow.port, case).status == 200
    assert send(servers.declare.port, case) == send(servers.declare.port, call("x", "GET", "/x"))
