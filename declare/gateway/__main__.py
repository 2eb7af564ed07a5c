"""Command line of the gateway process: `python -m declare.gateway --port P --admin-token-file F`.

Reads the admin token file (must not be readable by group or others) and the optional
DECLARE_GATEWAY_AUTH_TOKEN environment variable, sets up logging, and serves on uvloop until
SIGTERM or SIGINT, then stops accepting, lets requests in flight finish (up to
--shutdown-grace seconds) and exits 0. Exits 2 on a bad argument or token file and 3 when it
cannot listen on the address (e.g. the port is taken).

It is started by `declare.gateway.process.start_gateway`; users do not run it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import stat
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from declare.gateway import AUTH_ENV, MAX_BODY_BYTES
from declare.gateway.capture.rows import MAX_PAYLOAD_BYTES
from declare.gateway.protocol import GatewayRunner
from declare.gateway.release import RELEASE_SECONDS, ConnectionRelease
from declare.gateway.server import Gateway, GatewayConfig

log = logging.getLogger("declare.gateway")

EXIT_USAGE = 2
EXIT_LISTEN = 3


class StartupError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _add_timeouts(parser: argparse.ArgumentParser) -> None:
    """The options bounding how long a client or a replica may take."""
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=30.0,
        help="seconds a request may wait for a connection slot to a replica (then 503)",
    )
    parser.add_argument(
        "--upstream-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for a replica's response (then 504; not retried)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client may take to send a request's body (then 408)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a new connection may take to send its request head (then closed)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=75.0,
        help="seconds a kept-alive connection may stay idle between requests (then closed)",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m declare.gateway", description="declare's gateway (data plane)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-token-file", type=Path, required=True)
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    _add_timeouts(parser)
    parser.add_argument(
        "--hold-queue",
        type=int,
        default=1000,
        help="most requests held per endpoint waiting for a replica (then 503 at once)",
    )
    parser.add_argument(
        "--eject-seconds",
        type=float,
        default=2.0,
        help="seconds an unreachable replica is skipped by picks (0: never skipped)",
    )
    parser.add_argument(
        "--table-file",
        type=Path,
        default=None,
        help="keep each pushed routing table here; loaded at start when present",
    )
    parser.add_argument(
        "--capture-root",
        type=Path,
        default=None,
        help="folder of the inference tables of capturing endpoints (none: nothing captured)",
    )
    parser.add_argument("--capture-buffer", type=int, default=20_000)
    parser.add_argument("--capture-flush-records", type=int, default=5_000)
    parser.add_argument("--capture-flush-seconds", type=float, default=1.0)
    parser.add_argument("--capture-max-payload-bytes", type=int, default=MAX_PAYLOAD_BYTES)
    parser.add_argument(
        "--access-log", type=Path, default=None, help="one JSON line per request to this file"
    )
    parser.add_argument("--pool-size", type=int, default=1024)
    parser.add_argument("--pool-per-replica", type=int, default=256)
    parser.add_argument(
        "--shadow-inflight", type=int, default=64, help="most shadow mirrors in flight"
    )
    parser.add_argument(
        "--shadow-timeout", type=float, default=30.0, help="seconds a shadow mirror may take"
    )
    _lifecycle_args(parser)
    parser.add_argument("--log-file", type=Path, default=None)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _lifecycle_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shutdown-grace", type=float, default=30.0)
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="listen with SO_REUSEPORT, so a new gateway can take over the port before this "
        "one stops (Linux: only processes of the same effective user share it)",
    )


def read_admin_token(path: Path) -> str:
    try:
        info = path.stat()
        token = path.read_text().strip()
    except OSError as exc:
        raise StartupError(f"cannot read the admin token file {path}: {exc}", EXIT_USAGE) from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(info.st_mode)
        raise StartupError(
            f"the admin token file {path} is open to other users (mode {mode:o}); "
            "it must be mode 600",
            EXIT_USAGE,
        )
    if not token:
        raise StartupError(f"the admin token file {path} is empty", EXIT_USAGE)
    return token


def setup_logging(log_file: Path | None, level: str) -> None:
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


def make_config(args: argparse.Namespace) -> GatewayConfig:
    if args.max_body_bytes <= 0:
        raise StartupError("--max-body-bytes must be positive", EXIT_USAGE)
    timeouts = (args.queue_timeout, args.upstream_timeout, args.body_timeout)
    connection = (args.header_timeout, args.idle_timeout)  # timers: finite too
    if min(timeouts) <= 0 or not all(0 < t < float("inf") for t in connection):
        raise StartupError(
            "--queue-timeout, --upstream-timeout, --body-timeout, --header-timeout and "
            "--idle-timeout must be positive (the last two finite)",
            EXIT_USAGE,
        )
    if args.hold_queue < 0:
        raise StartupError("--hold-queue must be 0 or more", EXIT_USAGE)
    if not 0 <= args.eject_seconds < float("inf"):
        raise StartupError("--eject-seconds must be a number of seconds, 0 or more", EXIT_USAGE)
    if min(args.capture_buffer, args.capture_flush_records, args.capture_max_payload_bytes) < 1:
        raise StartupError(
            "--capture-buffer, --capture-flush-records and --capture-max-payload-bytes "
            "must be 1 or more",
            EXIT_USAGE,
        )
    if not 0 < args.capture_flush_seconds < float("inf"):
        raise StartupError(
            "--capture-flush-seconds must be a number of seconds above 0", EXIT_USAGE
        )
    if args.shadow_inflight < 0 or not 0 < args.shadow_timeout < float("inf"):
        raise StartupError(
            "--shadow-inflight must be 0 or more and --shadow-timeout above 0", EXIT_USAGE
        )
    return GatewayConfig(
        admin_token=read_admin_token(args.admin_token_file),
        auth_token=os.environ.get(AUTH_ENV) or None,
        max_body_bytes=args.max_body_bytes,
        queue_timeout=args.queue_timeout,
        upstream_timeout=args.upstream_timeout,
        body_timeout=args.body_timeout,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
        pool_size=args.pool_size,
        pool_per_replica=args.pool_per_replica,
        hold_queue=args.hold_queue,
        eject_seconds=args.eject_seconds,
        table_file=args.table_file,
        capture_root=args.capture_root,
        capture_buffer=args.capture_buffer,
        capture_flush_records=args.capture_flush_records,
        capture_flush_seconds=args.capture_flush_seconds,
        capture_max_payload_bytes=args.capture_max_payload_bytes,
        shadow_inflight=args.shadow_inflight,
        shadow_timeout=args.shadow_timeout,
        access_log=args.access_log,
    )


async def serve(
    config: GatewayConfig, host: str, port: int, grace: float, reuse_port: bool = False
) -> None:
    """Serve until SIGTERM/SIGINT, then close the listening socket and drain.

    With `reuse_port` the socket is bound with SO_REUSEPORT: while an old and a new gateway
    both listen, the kernel spreads new connections between them; the one that stops gets
    none once its socket is closed. Linux lets only sockets of the same effective user share
    a port that way, so another user cannot take over a gateway's port. Its clients are
    let go first (`release.py`), so none loses a request on a kept-alive connection.
    """
    app = Gateway(config).make_app()
    release = ConnectionRelease()
    app.on_response_prepare.append(release.on_prepare)
    # handler_cancellation: a request whose client went away is cancelled, so a held request
    # (or one waiting for its replica) stops counting at once, as a proxy should.
    # GatewayRunner (protocol.py): aiohttp's own error answers in JSON, the head timeout.
    runner = GatewayRunner(
        app,
        header_timeout=config.header_timeout,
        keepalive_timeout=config.idle_timeout,
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=grace, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_LISTEN
        ) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "gateway pid %d listening on http://%s:%d (auth %s, max body %d bytes, queue timeout "
        "%g s, upstream timeout %g s, hold queue %d per endpoint, eject %g s, head timeout "
        "%g s, idle timeout %g s)",
        os.getpid(),
        host,
        port,
        "on" if config.auth_token else "off",
        config.max_body_bytes,
        config.queue_timeout,
        config.upstream_timeout,
        config.hold_queue,
        config.eject_seconds,
        config.header_timeout,
        config.idle_timeout,
    )
    await stop.wait()
    log.info("stopping: letting requests in flight finish (up to %g s)", grace)
    await release.release(runner, site, min(grace, RELEASE_SECONDS))
    await runner.cleanup()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_file, args.log_level)
    try:
        config = make_config(args)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(config, args.host, args.port, args.shutdown_grace, args.reuse_port))
    except StartupError as exc:
        log.error("%s", exc)
        if args.log_file is not None:  # else the log already is stderr
            print(f"declare gateway: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
