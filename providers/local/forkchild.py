"""A replica forked by the fork server: from the fork to the `uvicorn` MLflow would have run.

`mlflow models serve -m SRC -h HOST -p PORT --env-manager local -w N` selects the model's
flavor backend, downloads SRC (a local path stays where it is), and runs
`uvicorn --host HOST --port PORT --workers N mlflow.pyfunc.scoring_server.app:app` with its
environment plus `__pyfunc_model_path__` (the model's file: URI) and
`MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT` (`scoring_server.get_cmd`). A forked replica does
the same steps in the process the fork server forked, with MLflow's and uvicorn's own
functions:

- `detach`, right after the fork: a new session (its pgid is its pid), stdin /dev/null,
  stdout and stderr appended to the replica's log, every other inherited descriptor closed,
  the signal handlers and mask of a new interpreter back;
- `run`: `os.environ` replaced by the replica's environment, the working folder changed
  (and PWD set to it, as the bash MLflow runs uvicorn through does),
  MLflow's telemetry client set up again for that environment (as `import mlflow` does),
  `get_flavor_backend`, `_download_artifact_from_uri`, the two variables `get_cmd` sets,
  /proc/PID/cmdline and environ rewritten (`providers.local.proctitle`), `sys.argv` and
  `sys.path[0]` as the `uvicorn` script has them; with one worker the app module is imported
  (that loads the model and builds the FastAPI app) and the modules this brought in are
  reported to the fork server, which learns them; then uvicorn's own command line
  (`uvicorn.main.main`) runs with MLflow's arguments, so every default (loop and http
  `auto`, logging, `--app-dir .`, UVICORN_* variables) is uvicorn's.

Its exit is the interpreter's, as uvicorn's would be (SystemExit, or a traceback and 1).

What it does not do: serve anything itself, or learn modules (the fork server does, from
the report), or support flavor backends other than python_function (the server refuses).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from providers.local import proctitle

__all__ = ["APP_MODULE", "ForkRequest", "ForkedChild", "detach", "run"]

APP_MODULE = "mlflow.pyfunc.scoring_server.app"
_Handler = Any  # what signal.getsignal returns
_FIELDS = ("replica_id", "source", "host", "port", "workers", "env", "log", "cwd")
SERVERS = ("mlflow", "declare")


def _checked(data: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in _FIELDS if k not in data]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    env = data["env"]
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ValueError("env must map strings to strings")
    for key in ("port", "workers"):
        if isinstance(data[key], bool) or not isinstance(data[key], int) or data[key] < 1:
            raise ValueError(f"{key} must be a positive whole number")
    for key in ("replica_id", "source", "host", "log", "cwd"):
        if not isinstance(data[key], str) or not data[key]:
            raise ValueError(f"{key} must be a non-empty string")
    if data.get("server", "mlflow") not in SERVERS:
        raise ValueError(f"server must be one of {', '.join(SERVERS)}")
    server_args = data.get("server_args", [])
    if not isinstance(server_args, list) or not all(isinstance(a, str) for a in server_args):
        raise ValueError("server_args must be a list of strings")
    return dict(data)


@dataclass(frozen=True)
class ForkRequest:
    """One replica as the provider asks the fork server for it (see providers.local.forkproto)."""

    replica_id: str
    source: str
    host: str
    port: int
    workers: int
    env: Mapping[str, str]
    replica_keys: frozenset[str]
    log: str
    cwd: str
    server: str = "mlflow"  # or "declare": `python -m declare.serve`
    server_args: tuple[str, ...] = ()  # declare.serve's options beyond model, host, port, workers

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ForkRequest:
        """The request in `data`; ValueError saying what is wrong when it is not one."""
        ok = _checked(data)
        keys = ok.get("replica_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("replica_keys must be a list of names")
        return cls(
            replica_id=ok["replica_id"],
            source=ok["source"],
            host=ok["host"],
            port=ok["port"],
            workers=ok["workers"],
            env=dict(ok["env"]),
            replica_keys=frozenset(keys),
            log=ok["log"],
            cwd=ok["cwd"],
            server=ok.get("server", "mlflow"),
            server_args=tuple(ok.get("server_args", [])),
        )

    def uvicorn_args(self) -> list[str]:
        """What MLflow's `get_cmd` gives `uvicorn` (host, port and workers always set)."""
        return [
            "--host", self.host,
            "--port", str(self.port),
            "--workers", str(self.workers),
            f"{APP_MODULE}:app",
        ]  # fmt: skip

    def declare_args(self) -> list[str]:
        """`python -m declare.serve`'s arguments for this replica."""
        return [
            "--model", self.source,
            "--host", self.host,
            "--port", str(self.port),
            "--workers", str(self.workers),
            *self.server_args,
        ]  # fmt: skip


@dataclass(frozen=True)
class ForkedChild:
    """What the forked process takes from the fork server: its request and the server's facts."""

    request: ForkRequest
    report_fd: int  # write end of the pipe the learned modules go back through
    server_pid: int
    server_path0: str  # the fork server's sys.path[0] (its `-m` folder), replaced here
    learnable_roots: tuple[str, ...]  # modules from under these may be learned
    handlers: Mapping[int, _Handler]  # the signal handlers of a new interpreter


def detach(log_fd: int, keep_fd: int, handlers: Mapping[int, _Handler]) -> None:
    """New session, stdio to the log and /dev/null, other descriptors closed, signals reset."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.closerange(3, keep_fd)  # `null` too, unless it is 0
    os.closerange(keep_fd + 1, max(os.sysconf("SC_OPEN_MAX"), keep_fd + 2))
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _prepare_mlflow(request: ForkRequest) -> str:
    """MLflow launcher's steps before it runs uvicorn; the `uvicorn` script it would run."""
    # Modules as values: their functions are untyped, and are called here as MLflow calls them.
    env_vars = importlib.import_module("mlflow.environment_variables")
    backends = importlib.import_module("mlflow.models.flavor_backend_registry")
    scoring_server = importlib.import_module("mlflow.pyfunc.scoring_server")
    telemetry = importlib.import_module("mlflow.telemetry")
    artifact_utils = importlib.import_module("mlflow.tracking.artifact_utils")
    file_utils = importlib.import_module("mlflow.utils.file_utils")

    telemetry.set_telemetry_client()  # what `import mlflow` does, with the replica's env
    backends.get_flavor_backend(
        request.source, env_manager="local", workers=str(request.workers), install_mlflow=False
    )
    local_path = artifact_utils._download_artifact_from_uri(request.source)
    os.environ[scoring_server._SERVER_MODEL_PATH] = file_utils.path_to_local_file_uri(local_path)
    timeout = env_vars.MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    os.environ[timeout.name] = str(timeout.get())
    script = shutil.which("uvicorn", path=os.environ.get("PATH"))
    return os.path.realpath(script) if script else os.path.join(sys.prefix, "bin", "uvicorn")


def _report(child: ForkedChild, before: set[str]) -> None:
    """Send the fork server the learnable modules imported since the fork; close the pipe."""
    names = []
    for name, module in list(sys.modules.items()):
        if name in before or module is None:
            continue
        path = getattr(module, "__file__", None)
        if path is None or str(path).startswith(child.learnable_roots):
            names.append(name)
    with contextlib.suppress(OSError), os.fdopen(child.report_fd, "w") as pipe:
        json.dump(names, pipe)


def _reset_process_state() -> None:
    """What a new interpreter has fresh that a fork shares with its parent."""
    tempfile.tempdir = None
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # the global RandomState of a new process is seeded anew


def run(child: ForkedChild) -> None:
    """Become the replica: set it up as its launcher would, then run its server."""
    request = child.request
    os.environ.clear()
    os.environ.update(request.env)
    os.chdir(request.cwd)
    _reset_process_state()
    if request.server == "declare":
        _run_declare(child)
    else:
        os.environ["PWD"] = request.cwd  # MLflow runs uvicorn through bash, which sets it
        os.environ.setdefault("SHLVL", "0")  # and SHLVL ("0" when it had none; else unchanged)
        _run_mlflow(child)


def _run_declare(child: ForkedChild) -> None:
    """`python -m declare.serve ...` in this process: the model loads, the fork server learns
    the modules that brought in, then it serves (its exit is this process's)."""
    request = child.request
    importlib.import_module("mlflow.telemetry").set_telemetry_client()  # as `import mlflow`
    args = request.declare_args()
    title = ["declare-replica", request.replica_id, "(forked):", "declare.serve", *args]
    left_out = proctitle.rewrite(title, os.environ)
    if left_out:
        print(f"[declare] /proc/{os.getpid()}/environ leaves out {left_out}", file=sys.stderr)
    sys.argv = [sys.executable, "-m", "declare.serve", *args]
    if sys.path and sys.path[0] == child.server_path0:
        sys.path[0] = request.cwd  # what `python -m` puts first
    before = set(sys.modules)
    from declare.serve.main import main

    sys.exit(main(args, after_load=lambda: _report(child, before)))


def _run_mlflow(child: ForkedChild) -> None:
    """What `mlflow models serve` would run: uvicorn's command line with MLflow's app."""
    request = child.request
    script = _prepare_mlflow(request)
    argv = [script, *request.uvicorn_args()]
    title = ["declare-replica", request.replica_id, "(forked):", "uvicorn", *argv[1:]]
    left_out = proctitle.rewrite(title, os.environ)
    if left_out:
        print(f"[declare] /proc/{os.getpid()}/environ leaves out {left_out}", file=sys.stderr)
    sys.argv = argv
    if sys.path and sys.path[0] == child.server_path0:
        sys.path[0] = os.path.dirname(script)
    before = set(sys.modules)
    if request.workers == 1:
        importlib.import_module(APP_MODULE)  # loads the model and builds the app, as uvicorn
        _report(child, before)
    else:
        os.close(child.report_fd)
    from uvicorn.main import main as uvicorn_main

    uvicorn_main.main(args=argv[1:], prog_name="uvicorn")


def handlers_of(signals: Sequence[int]) -> dict[int, _Handler]:
    """The current handlers of `signals` (read at the fork server's start, before its own)."""
    return {s: signal.getsignal(s) for s in signals}
