"""The fork server ("zygote") of a project state folder: forks replicas that start warm.

Run by the provider (`providers.local.forkclient`) as
`python -m providers.local.forkserver SOCKET [IDLE_SECONDS] [ROOM]`, detached. It imports
what every replica needs (`BASE_MODULES`: MLflow's scoring server, uvicorn and its `auto`
loop and protocol modules, FastAPI, pandas), the modules it learned from earlier replicas
(`<key>.learned.json`), fills MLflow's cache of installed packages, then listens on SOCKET
(created 0600; only its own user may ask) for the requests of `providers.local.forkproto`.
On a fork request it checks that it may fork (no thread but the main one, installed packages
unchanged, the replica's environment equal to its own in every variable read so far at
import, the model a python_function one) and forks; the child becomes the replica
(`providers.local.forkchild`), the server answers its pid and start time. Afterwards it
learns: it imports the model's `python_function.loader_module` and the modules the child
reports it imported while loading the model, so that the next fork has them. A learned
module that leaves a thread running is never learned again (the server starts itself anew
without it, keeping its pid).

It reaps its children (SIGCHLD), and exits on SIGTERM, when its socket is removed (the state
folder was deleted, or another server took over), when the packages changed, or after
`IDLE_SECONDS` without a replica or a request.

What it does not do: keep records of replicas (the provider does), stop replicas (they are
in their own sessions and outlive it), or serve models other than python_function ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from providers.local.forkchild import ForkedChild, ForkRequest, detach, handlers_of
from providers.local.forkproto import (
    IDLE_SECONDS,
    ForkServerPaths,
    read_line,
    send_line,
    socket_address,
    startup_mismatch,
)
from providers.local.preload import Preloader, fingerprint, learnable_roots, loader_module, log

__all__ = ["ForkServer", "main"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)
_MODULE = "providers.local.forkserver"


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _children_of(pid: int) -> set[int]:
    """Processes whose parent is `pid` (this server's replicas, after it started anew)."""
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit():
                stat = (entry / "stat").read_text()
                if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


class ServerSocket:
    """The fork server's listening socket (0600) and lock file, and whether they are still its."""

    def __init__(self, paths: ForkServerPaths) -> None:
        self.paths = paths
        self.listener: socket.socket | None = None
        self.lock_file: Any = None
        self.inode = 0

    def open(self) -> bool:
        """Take the lock and bind the socket; False if another fork server holds the lock."""
        self.paths.folder.mkdir(parents=True, exist_ok=True)
        self.lock_file = open(self.paths.folder / f"{self.paths.key}.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(self.lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: never a moment open to others
        try:
            with socket_address(self.paths.socket) as address:
                listener.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(self.paths.socket, 0o600)
        listener.listen(64)
        self.listener = listener
        self.inode = os.stat(self.paths.socket).st_ino
        return True

    def lost(self) -> str:
        """Why the socket is not this server's any more ('' while it is)."""
        try:
            if os.stat(self.paths.socket).st_ino != self.inode:
                return "its socket was replaced"
        except OSError:
            return "its socket (or the state folder) was removed"
        return ""

    def close(self, remove: bool = True) -> None:
        """Close the socket and lock; `remove` the socket file too, if it is still ours."""
        if remove and not self.lost():
            with contextlib.suppress(OSError):
                self.paths.socket.unlink()
        if self.listener is not None:
            self.listener.close()
        if self.lock_file is not None:
            self.lock_file.close()


class ForkServer:
    """One fork server: its socket and lock, its live children, what it preloaded (`warm`).

    `serve()` returns None when the server is to exit, and a `ForkedChild` in a child it
    forked (which then becomes a replica with `forkchild.run`).
    """

    def __init__(self, paths: ForkServerPaths, idle_seconds: float, argv: list[str]) -> None:
        self.paths = paths
        self.idle_seconds = idle_seconds
        self.argv = argv
        self.pid = os.getpid()
        self.env = dict(os.environ)  # its environment as it started, before any import
        self.path0 = sys.path[0] if sys.path else ""
        self.search_path = list(sys.path[1:])
        self.handlers = handlers_of(_SIGNALS)
        self.warm = Preloader(paths.learned, self._restart)
        self.children: set[int] = set()
        self.last_activity = time.monotonic()
        self.exit_reason = ""
        self.socket = ServerSocket(paths)
        self.fingerprint = ""
        self.roots = learnable_roots()

    # -- start and stop ----------------------------------------------------------------------

    def preload(self) -> None:
        """Import what replicas need (`providers.local.preload`); note the packages' state."""
        self.warm.preload()
        self.fingerprint = fingerprint(self.search_path)

    def listen(self) -> bool:
        """Bind the socket and take over SIGTERM and SIGCHLD; False if another server runs."""
        if not self.socket.open():
            return False
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGCHLD, self._reap)
        self.children = _children_of(self.pid)
        return True

    def _restart(self, why: str) -> None:
        log(f"starting anew ({why})")
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", _MODULE, *self.argv], self.env)

    # -- the loop ----------------------------------------------------------------------------

    def serve(self) -> ForkedChild | None:
        listener = self.socket.listener
        assert listener is not None
        log(f"ready on {self.paths.socket}")
        try:
            while not self.exit_reason:
                waiting = [listener, *self.warm.reports]
                timeout = 0.0 if self.warm.queue else 1.0
                ready, _, _ = select.select(waiting, [], [], timeout)
                if not ready and self.warm.queue:
                    self.warm.step()
                for item in ready:
                    if item is listener:
                        child = self._accept(listener)
                        if child is not None:
                            return child
                    elif isinstance(item, int):
                        self.warm.read_report(item)
                self._check_exit()
        finally:
            if os.getpid() == self.pid:
                self.socket.close()
        log(f"exiting: {self.exit_reason}")
        return None

    def _check_exit(self) -> None:
        self.exit_reason = self.exit_reason or self.socket.lost()
        idle = time.monotonic() - self.last_activity
        if not self.children and idle > self.idle_seconds:
            self.exit_reason = f"idle for {idle:.0f}s with no replica"

    def _reap(self, signum: int = 0, frame: object = None) -> None:
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)
                self.last_activity = time.monotonic()

    # -- requests ----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> ForkedChild | None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10.0)
            try:
                if _peer_uid(conn) != os.getuid():
                    return None
                message = read_line(conn)
                self.last_activity = time.monotonic()
                if message.get("op") == "ping":
                    send_line(conn, self._status())
                    return None
                if message.get("op") != "fork":
                    send_line(conn, {"ok": False, "error": "unknown op", "stale": False})
                    return None
                return self._fork_request(conn, message)
            except (OSError, ValueError) as exc:
                log(f"a request failed: {exc}")
            except Exception:  # one bad request must not end the server
                log(f"a request failed:\n{traceback.format_exc()}")
                with contextlib.suppress(OSError):
                    send_line(conn, {"ok": False, "error": "fork server error", "stale": True})
            return None

    def _status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "pid": self.pid,
            "start_time": _started(),
            "threads": [t.name for t in threading.enumerate()],
            "children": sorted(self.children),
            "learning": len(self.warm.queue),
        }

    def _fork_request(self, conn: socket.socket, message: dict[str, Any]) -> ForkedChild | None:
        try:
            request = ForkRequest.from_json(message)
        except ValueError as exc:
            send_line(conn, {"ok": False, "error": f"bad request: {exc}", "stale": False})
            return None
        refusal = self._refusal(request)
        if refusal is not None:
            error, stale = refusal
            send_line(conn, {"ok": False, "error": error, "stale": stale})
            return None
        child = self._fork(request, conn)
        if child is None:
            self.warm.learn([loader_module(request.source) or ""])
        return child

    def _refusal(self, request: ForkRequest) -> tuple[str, bool] | None:
        """Why this server must not fork `request` (and whether a new server could), or None."""
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if threads:
            return f"the fork server runs threads ({', '.join(threads)})", True
        if fingerprint(self.search_path) != self.fingerprint:
            self.exit_reason = "installed packages changed"
            return "the installed packages changed since the fork server started", True
        differ = startup_mismatch(self.env, request.env, self.warm.read)
        if differ:
            stale = any(name not in request.replica_keys for name in differ)
            return f"variables read at import differ from the fork server's: {differ}", stale
        if loader_module(request.source) is None:
            return f"{request.source} has no MLmodel with a python_function flavor", False
        return None

    def _fork(self, request: ForkRequest, conn: socket.socket) -> ForkedChild | None:
        try:
            log_fd = os.open(request.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            send_line(conn, {"ok": False, "error": f"cannot open the log: {exc}", "stale": False})
            return None
        _note_forked(log_fd, request.replica_id)
        report_r, report_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        blocked = {signal.SIGCHLD, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
            for fd in (log_fd, report_r, report_w):
                os.close(fd)
            send_line(conn, {"ok": False, "error": f"fork failed: {exc}", "stale": False})
            return None
        if pid == 0:
            return self._become_child(request, conn, log_fd, report_r, report_w)
        self.children.add(pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        os.close(log_fd)
        os.close(report_w)
        self.warm.watch(report_r)
        _await_session(pid)
        _answer(conn, pid)
        return None

    def _become_child(
        self, request: ForkRequest, conn: socket.socket, log_fd: int, report_r: int, w: int
    ) -> ForkedChild:
        conn.close()
        self.close_inherited()
        os.close(report_r)
        detach(log_fd, w, self.handlers)
        return ForkedChild(request, w, self.pid, self.path0, self.roots, self.handlers)

    def close_inherited(self) -> None:
        """In a child: close the server's socket and lock (without removing the socket file)."""
        self.socket.close(remove=False)
        self.warm.close_reports()


def _await_session(pid: int, timeout: float = 5.0) -> None:
    """Wait until the child leads its own session (its `setsid`), so that the provider's
    first signal to its process group, however soon, reaches it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.getsid(pid) == pid:
                return
        except ProcessLookupError:
            return
        time.sleep(0.001)


def _note_forked(log_fd: int, replica_id: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    line = (
        f"[declare] {stamp} replica {replica_id}: forked by the fork server (pid {os.getpid()})"
        " instead of started by its command\n"
    )
    os.write(log_fd, line.encode())


def _answer(conn: socket.socket, pid: int) -> None:
    """Answer the fork; kill the child if the provider does not acknowledge it (no record)."""
    try:
        send_line(conn, {"ok": True, "pid": pid, "start_time": _start_time_of(pid)})
        read_line(conn)  # the acknowledgement: the provider took the child on
    except (OSError, ValueError) as exc:
        log(f"child {pid} not acknowledged ({exc}); killing it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    else:
        log(f"forked replica pid {pid}")


def _start_time_of(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rfind(")") + 2 :].split()[19])


def _started() -> int:
    return _start_time_of(os.getpid())


def main(argv: list[str]) -> int:
    """Serve until told to exit; in a forked child, run the replica (uvicorn exits)."""
    sock = Path(argv[0])
    idle = float(argv[1]) if len(argv) > 1 and argv[1].strip() else IDLE_SECONDS
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no telemetry thread here
    server = ForkServer(ForkServerPaths(sock.parent, sock.stem), idle, argv)
    server.preload()
    if not server.listen():
        log("another fork server holds this socket; exiting")
        return 0
    child = server.serve()
    if child is None:
        return 0
    from providers.local import forkchild

    forkchild.run(child)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
