"""The provider's side of its fork server: the record, starting it, asking it, stopping it.

`ForkServerClient(state_dir / "local")` is the fork server of that state folder and of the
running interpreter (`providers.local.forkproto.ForkServerPaths`). Its record,
`forkserver/<key>.json`, holds the pid and start time of the process the provider started
(`declare.procs.start_detached`, in its own session), so a reused PID is never taken for
it. `fork(message)` asks it for one replica: `ForkUnavailable` when it cannot (not running:
then it is started for the next replica; still starting; no answer; a refusal), so the
caller can start that replica by exec instead. A fork server that refuses as "stale" (its
environment or packages are not the provider's any more) is replaced.

What it does not do: write replica records or logs (the provider does), fork anything itself
(`providers.local.forkserver`), or stop replicas (a fork server's children are not its
process group).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from declare import procs
from declare.environment import replica_environment
from providers._shared import exclusive
from providers.local.forkproto import (
    IDLE_SECONDS,
    ForkServerPaths,
    read_line,
    send_line,
    socket_address,
)
from providers.local.proctitle import ROOM_ARGUMENT, ROOM_VARIABLE, room_value

__all__ = ["ForkServerClient", "ForkUnavailable", "server_env"]

RECORD_FORMAT = 1
# A fork server that started longer ago than this and still does not answer is replaced.
STARTUP_SECONDS = 120.0
STARTED_WAIT_SECONDS = 15.0  # how long a start waits for a fork server it just started
# How long a fork request may wait for its answer (a server may be importing what it learned).
ANSWER_SECONDS = 30.0
# The folder the `providers` package is in: the fork server's working folder, so that
# `python -m providers.local.forkserver` imports this very code.
_CODE_ROOT = Path(__file__).resolve().parents[2]


class ForkUnavailable(Exception):
    """The fork server cannot fork this replica now; the message says why."""


def server_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The fork server's environment: the allow-listed part of the provider's, as replicas
    get it (declare.environment; a forked replica's is then replaced by its own)."""
    base = procs.venv_path_env(replica_environment(os.environ if environ is None else environ))
    return {**base, "MLFLOW_DISABLE_TELEMETRY": "true", ROOM_VARIABLE: room_value()}


class ForkServerClient:
    """The fork server of one state folder and interpreter, as the provider drives it."""

    def __init__(self, local_dir: Path) -> None:
        self.paths = ForkServerPaths.of(local_dir)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive(self.paths.folder / f"{self.paths.key}.start.lock")

    def _read_record(self) -> tuple[procs.ProcessId, float] | None:
        try:
            data = json.loads(self.paths.record.read_text())
            return procs.ProcessId.from_json(data["process"]), float(data["started_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def running(self) -> procs.ProcessId | None:
        """The recorded fork server when that very process is alive, else None."""
        found = self._read_record()
        if found is not None and procs.is_running(found[0]):
            return found[0]
        return None

    def _start(self) -> procs.ProcessId:
        self.paths.folder.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "providers.local.forkserver",
            str(self.paths.socket), str(IDLE_SECONDS), ROOM_ARGUMENT,
        ]  # fmt: skip
        proc = procs.start_detached(argv, self.paths.log, server_env(), cwd=_CODE_ROOT)
        record = {"format": RECORD_FORMAT, "process": proc.to_json(), "started_at": time.time()}
        tmp = self.paths.record.with_name(f".{self.paths.record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.paths.record)
        return proc

    def ensure(self) -> tuple[procs.ProcessId, bool]:
        """The running fork server, started now if it was not; (its id, whether started)."""
        with self._locked():
            proc = self.running()
            if proc is not None:
                return proc, False
            return self._start(), True

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop the recorded fork server (never a reused PID) and drop its record."""
        with self._locked():
            found = self._read_record()
            if found is not None:
                procs.stop(found[0], grace_seconds)
            with contextlib.suppress(FileNotFoundError):
                self.paths.record.unlink()

    def _restart(self) -> procs.ProcessId:
        with self._locked():
            found = self._read_record()
            if found is not None:
                procs.stop(found[0], grace_seconds=2.0)
            return self._start()

    def _ask(self, message: Mapping[str, Any], timeout: float) -> tuple[dict[str, Any], Any]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            with socket_address(self.paths.socket) as address:
                sock.connect(address)
            send_line(sock, message)
            return read_line(sock), sock
        except BaseException:
            sock.close()
            raise

    def status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The recorded fork server's answer to a ping (see forkproto), or None."""
        proc = self.running()
        if proc is None:
            return None
        try:
            answer, sock = self._ask({"op": "ping"}, timeout)
        except (OSError, ValueError):
            return None
        sock.close()
        return answer if answer.get("ok") and answer.get("pid") == proc.pid else None

    def ping(self, timeout: float = 2.0) -> bool:
        """True when the recorded fork server answers on its socket."""
        return self.status(timeout) is not None

    def wait_ready(self, timeout: float) -> bool:
        """Start the fork server if needed and wait up to `timeout` s for it to answer."""
        self.ensure()
        deadline = time.monotonic() + timeout
        while True:
            if self.ping():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _answers_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ping():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def fork(
        self,
        message: Mapping[str, Any],
        on_forked: Callable[[procs.ProcessId], None] = lambda _: None,
    ) -> procs.ProcessId:
        """Ask for one replica; its identity, or ForkUnavailable saying why not.

        `on_forked(child)` runs before the fork server is told the child was taken on (the
        acknowledgement): the provider records it there, so a provider killed at any moment
        leaves no replica without a record (an unacknowledged child is killed by the fork
        server). What `on_forked` raises goes to the caller, unacknowledged."""
        proc, started = self.ensure()
        if started and not self._answers_within(STARTED_WAIT_SECONDS):
            # Waiting for a new fork server (its imports, ~1.5 s) and forking beats a new
            # interpreter (~6 s); one that does not answer soon is left for the next ones.
            raise ForkUnavailable(
                f"the fork server was not running; it was started (pid {proc.pid}) but did not "
                f"answer within {STARTED_WAIT_SECONDS:g} s, so it serves the next replicas"
            )
        try:
            answer, sock = self._ask({"op": "fork", **message}, ANSWER_SECONDS)
        except (OSError, ValueError) as exc:
            raise self._no_answer(proc, exc) from exc
        with sock:
            if not answer.get("ok"):
                if answer.get("stale"):
                    new = self._restart()
                    raise ForkUnavailable(
                        f"{answer.get('error')}; a new fork server was started (pid {new.pid})"
                    )
                raise ForkUnavailable(f"the fork server refused: {answer.get('error')}")
            child = procs.ProcessId(int(answer["pid"]), int(answer["start_time"]))
            if not procs.is_running(child):
                raise ForkUnavailable(f"the forked process {child.pid} exited at once")
            on_forked(child)
            send_line(sock, {"op": "ack"})
        return child

    def _no_answer(self, proc: procs.ProcessId, exc: BaseException) -> ForkUnavailable:
        found = self._read_record()
        age = time.time() - found[1] if found else STARTUP_SECONDS + 1
        if age <= STARTUP_SECONDS:
            return ForkUnavailable(f"the fork server (pid {proc.pid}) is still starting")
        new = self._restart()
        return ForkUnavailable(
            f"the fork server (pid {proc.pid}) did not answer ({exc}); a new one was started "
            f"(pid {new.pid})"
        )
