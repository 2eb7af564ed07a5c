"""A trivial stand-in for an MLflow scoring server, for the gateway's tests and benchmark.

`python -m declare.gateway.echo --port P [--id NAME]` serves on 127.0.0.1:
    POST /invocations   answers 200 with the request body and Content-Type unchanged.
                        A JSON object body may steer it: `"echo_delay_seconds": s` waits s
                        seconds first, `"echo_status": n` answers with status n.
    GET  /ping          200 (MLflow's liveness path)
    GET  /_echo/stats   {"id": NAME, "invocations": n, "inflight": n}

It is not a model server and is not used by declare itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import uvloop
from aiohttp import web


def make_app(ident: str) -> web.Application:
    stats = {"invocations": 0, "inflight": 0}

    async def invocations(request: web.Request) -> web.Response:
        body = await request.read()
        stats["invocations"] += 1
        stats["inflight"] += 1
        try:
            status = 200
            if body[:1] == b"{" and b'"echo_' in body:
                steer = json.loads(body)
                await asyncio.sleep(float(steer.get("echo_delay_seconds", 0)))
                status = int(steer.get("echo_status", 200))
            return web.Response(
                status=status,
                body=body,
                headers={"Content-Type": request.headers.get("Content-Type", "text/plain")},
            )
        finally:
            stats["inflight"] -= 1

    async def ping(_request: web.Request) -> web.Response:
        return web.Response(text="\n")

    async def echo_stats(_request: web.Request) -> web.Response:
        return web.json_response({"id": ident, **stats})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/invocations", invocations)
    app.router.add_get("/ping", ping)
    app.router.add_get("/_echo/stats", echo_stats)
    return app


def spawn_echo(port: int, ident: str = "echo", timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start an echo upstream on 127.0.0.1:`port` as a child process; return once it answers.

    The caller stops it by its Popen (terminate + wait): only that process, never by name.
    """
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "declare.gateway.echo", "--port", str(port), "--id", ident],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"echo upstream on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"echo upstream on port {port} did not start within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m declare.gateway.echo")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--id", default="echo")
    args = parser.parse_args(argv)
    web.run_app(
        make_app(args.id),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
