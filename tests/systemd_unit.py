"""A systemd service unit run the way systemd runs the parts of it declare relies on.

There is no systemd manager in these sandboxes (PID 1 is not systemd), so the tests run the
unit `declare runtime unit` writes with this small stand-in: `ExecStart` in
`WorkingDirectory`, in a new session, with systemd's default PATH plus the variables of
`EnvironmentFile` (`%E` the given config home, a leading '-' allowing it to be missing);
`Restart=always` with `RestartSec`; and a stop that signals only the main process
(`KillMode=process`), SIGTERM then SIGKILL after `TimeoutStopSec`. The unit's syntax itself is
checked by the real `systemd-analyze verify`. Nothing else of systemd is imitated.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse(text: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser["Service"]


def verify(path: Path) -> None:
    """The real `systemd-analyze verify` accepts the unit file at `path` (it must end in
    .service); an AssertionError with systemd's words otherwise."""
    done = subprocess.run(
        [shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def exec_argv(line: str) -> list[str]:
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]


class Unit:
    """Start with `start()`; `pid` is the main process now; `stop()` as `systemctl stop`."""

    def __init__(self, text: str, config_home: Path, log: Path) -> None:
        svc = parse(text)
        assert svc["Restart"] == "always" and svc["KillMode"] == "process", dict(svc)
        self.argv = exec_argv(svc["ExecStart"])
        self.cwd = svc["WorkingDirectory"]
        self.restart_seconds = float(svc["RestartSec"])
        self.stop_seconds = float(svc["TimeoutStopSec"])
        self.env_file = Path(svc["EnvironmentFile"].lstrip("-").replace("%E", str(config_home)))
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def environment(self) -> dict[str, str]:
        env = {"PATH": SYSTEMD_PATH, "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8"}
        if self.env_file.exists():
            for line in self.env_file.read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    key, _, value = line.partition("=")
                    env[key.strip()] = value.strip()
        return env

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        with open(self.log, "ab") as out:
            while not self._stopping.is_set():
                self.proc = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    env=self.environment(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self.starts += 1
                self.proc.wait()
                self._stopping.wait(self.restart_seconds)

    def stop(self) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(timeout=self.stop_seconds + self.restart_seconds + 5)

    def wait_for_start(self, after: int, timeout: float = 30.0) -> int:
        """The main pid once the unit has started more than `after` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid
            if self.starts > after and pid is not None:
                return pid
            time.sleep(0.05)
        raise AssertionError(f"the unit did not start again within {timeout:g} s")
