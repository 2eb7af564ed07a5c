"""`python -m declare.serve`: a replica that answers what `mlflow models serve` answers, faster.

    python -m declare.serve --model URI --host HOST --port PORT [--workers N]
                            [--max-batch-size N --max-delay-ms F]

Loads the model as MLflow's scoring server loads it (`load_model_with_mlflow_config`: a local
path or any MLflow model URI, `SERVING_MODEL_CONFIG` honoured), marks the process as a serving
environment as MLflow does, binds HOST:PORT, and answers with `declare.serve.scoring` over
`declare.serve.http`, on uvloop when it is installed (as uvicorn's `auto` loop). With
`--workers N`, N processes forked after the model loaded share the listening socket (the
model's memory is shared until written). With `--max-batch-size`, requests that can be joined
(`declare.serve.joining`) share `predict` calls (`declare.serve.batching`).

SIGTERM or SIGINT: stop accepting, answer what is in progress (up to 30 s), exit 0. A model that
does not load, or an address that cannot be bound, exits 1 with one line saying so.

What it does not do: choose its port, restart itself, or write access logs.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["main"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m declare.serve",
        description="Serve one MLflow pyfunc model as `mlflow models serve` does.",
    )
    parser.add_argument("--model", required=True, help="the model: a local path or MLflow URI")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--max-batch-size", type=int, default=None, help="rows per predict")
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.max_batch_size is not None and args.max_batch_size < 2:
        parser.error("--max-batch-size must be at least 2")
    if args.max_delay_ms < 0:
        parser.error("--max-delay-ms must not be negative")
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    return args


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _load(uri: str) -> Any:
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT
    from mlflow.pyfunc import scoring_server

    server: Any = scoring_server  # untyped; called as MLflow's app module calls it
    model = server.load_model_with_mlflow_config(uri)
    os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"  # as scoring_server.init does
    return model


async def _serve(sock: socket.socket, model: Any, args: argparse.Namespace) -> None:
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    from declare.serve.direct import Direct
    from declare.serve.http import serve
    from declare.serve.joining import Joiner
    from declare.serve.scoring import Scoring

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # As many threads as asyncio.to_thread (MLflow's server) has: a slow request does not hold
    # up the others.
    threads = min(32, (os.cpu_count() or 1) + 4)
    with concurrent.futures.ThreadPoolExecutor(threads, "declare-predict") as executor:
        direct = Direct.for_model(model)
        joiner = None
        if args.max_batch_size is not None:
            joiner = Joiner.for_model(model, args.max_batch_size)
        setting: Any = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
        handler = Scoring(
            model,
            float(setting.get()),
            executor,
            direct=direct,
            joiner=joiner,
            max_batch_size=args.max_batch_size,
            max_delay_ms=args.max_delay_ms,
        )
        try:
            await serve(sock, handler, stop)
        finally:
            await handler.close()


def _run_worker(sock: socket.socket, model: Any, args: argparse.Namespace) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(sock, model, args))
    else:
        uvloop.run(_serve(sock, model, args))


def _fork_workers(
    count: int, sock: socket.socket, model: Any, args: argparse.Namespace
) -> list[int]:
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run_worker(sock, model, args)
            except BaseException:  # a worker's end must not run the parent's code
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    return children


def main(argv: list[str] | None = None, after_load: Callable[[], None] | None = None) -> int:
    """Serve until SIGTERM; `after_load` runs once the model loaded (the local provider's fork
    server learns the modules that loading imported)."""
    args = _arguments(argv)
    started = time.monotonic()
    try:
        model = _load(args.model)
    except Exception:
        print(traceback.format_exc(), file=sys.stderr, end="")  # its last line names the error
        print(f"declare.serve: cannot load the model {args.model}", file=sys.stderr)
        return 1
    if after_load is not None:
        after_load()
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(f"declare.serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    batching = (
        f"batching up to {args.max_batch_size} rows, {args.max_delay_ms:g} ms"
        if args.max_batch_size
        else "no batching"
    )
    print(
        f"declare.serve: serving {args.model} on http://{args.host}:{args.port} "
        f"(pid {os.getpid()}, {args.workers} worker(s), {batching}; "
        f"loaded in {time.monotonic() - started:.2f} s)",
        file=sys.stderr,
        flush=True,
    )
    children = _fork_workers(args.workers - 1, sock, model, args)
    try:
        _run_worker(sock, model, args)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                continue
    return 0
