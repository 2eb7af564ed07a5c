"""The project's runtime as a pair of detached processes that restart each other.

The runtime (`python -m declare.runtime`) watches and acts between applies; its keeper
(`python -m declare.runtime.keeper`) only watches the runtime and starts it again when it
dies, and the runtime starts the keeper again when the keeper dies (each watches the other).
Both inherit the environment of the `declare apply` that started them.

With `runtime.supervisor: systemd` the unit that `declare runtime unit` writes runs the
runtime (`--supervised`, `Restart=always`) and there is no keeper: apply only hands the
endpoints over. It writes a fresh record and waits until a runtime started after that record
(so it read the unit's EnvironmentFile as it is now) claims it with the same settings hash as
apply's, or refuses it, naming the variables it has: then apply fails and says what differs.

Files in `state_dir/runtime/` (the record written atomically, under a lock file):

    runtime.json   {"runtime": {pid, start_time} | null, "keeper": ... | null,
                    "argv": [...], "started_at": unix, "settings_hash": "...",
                    "supervisor": "declare" | "systemd",
                    "env_hash": the runtime's own hash, "env_names": [names it acts with]}
    stop           present while the runtime is being stopped: nobody restarts anybody
    runtime.log, keeper.log

`ProcessRuntime` implements `declare.ports.RuntimeControl` with them. Processes are found
and signalled by (pid, start time) only, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from declare import procs
from declare.errors import RuntimeStartError
from declare.ports import RuntimeStatus

RECORD = "runtime.json"
STOP_MARK = "stop"
RUNTIME_LOG = "runtime.log"
KEEPER_LOG = "keeper.log"
START_TIMEOUT_SECONDS = 90.0
HAND_OVER_TIMEOUT_SECONDS = 60.0
SYSTEMD = "systemd"
_SOURCE_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class RuntimeRecord:
    """What runtime.json says: the two processes, how to start the runtime again, and when."""

    runtime: procs.ProcessId | None
    keeper: procs.ProcessId | None
    argv: tuple[str, ...]
    started_at: float
    settings_hash: str
    supervisor: str = "declare"
    env_hash: str = ""  # written by the runtime that claims (or refuses) the record
    env_names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime.to_json() if self.runtime else None,
            "keeper": self.keeper.to_json() if self.keeper else None,
            "argv": list(self.argv),
            "started_at": self.started_at,
            "settings_hash": self.settings_hash,
            "supervisor": self.supervisor,
            "env_hash": self.env_hash,
            "env_names": list(self.env_names),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RuntimeRecord:
        rt, kp = data.get("runtime"), data.get("keeper")
        return cls(
            runtime=procs.ProcessId.from_json(rt) if rt else None,
            keeper=procs.ProcessId.from_json(kp) if kp else None,
            argv=tuple(str(a) for a in data.get("argv") or ()),
            started_at=float(data.get("started_at", 0.0)),
            settings_hash=str(data.get("settings_hash", "")),
            supervisor=str(data.get("supervisor", "declare")),
            env_hash=str(data.get("env_hash", "")),
            env_names=tuple(str(n) for n in data.get("env_names") or ()),
        )


def runtime_dir(state_dir: Path) -> Path:
    return state_dir / "runtime"


@contextlib.contextmanager
def locked_record(state_dir: Path) -> Iterator[None]:
    """Hold the record's lock file (flock) while reading and writing it."""
    import fcntl

    folder = runtime_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def read_record(state_dir: Path) -> RuntimeRecord | None:
    try:
        return RuntimeRecord.from_json(json.loads((runtime_dir(state_dir) / RECORD).read_text()))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def write_record(state_dir: Path, record: RuntimeRecord) -> None:
    path = runtime_dir(state_dir) / RECORD
    tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def update_record(state_dir: Path, **changes: Any) -> RuntimeRecord | None:
    """Change fields of the record under its lock; None when there is no record."""
    with locked_record(state_dir):
        record = read_record(state_dir)
        if record is None:
            return None
        record = replace(record, **changes)
        write_record(state_dir, record)
        return record


def stopping(state_dir: Path) -> bool:
    return (runtime_dir(state_dir) / STOP_MARK).exists()


ORIGINAL_PYTHONPATH = "DECLARE_ORIGINAL_PYTHONPATH"


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the runtime and the keeper: declare's, with its code importable.
    The PYTHONPATH they were given is kept aside (`restore_environment`), so that replicas
    the runtime starts get the very environment of those `apply` starts."""
    env = procs.venv_path_env(environ)
    original = environ.get(ORIGINAL_PYTHONPATH, environ.get("PYTHONPATH", ""))
    env[ORIGINAL_PYTHONPATH] = original
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, original) if p)
    return env


def restore_environment() -> None:
    """In the runtime, once its imports are done: PYTHONPATH back as `apply` had it."""
    if ORIGINAL_PYTHONPATH not in os.environ:
        return
    original = os.environ.pop(ORIGINAL_PYTHONPATH)
    if original:
        os.environ["PYTHONPATH"] = original
    else:
        os.environ.pop("PYTHONPATH", None)


def spawn(state_dir: Path, argv: Sequence[str], log_name: str) -> procs.ProcessId:
    folder = runtime_dir(state_dir)
    return procs.start_detached(argv, folder / log_name, child_env(os.environ), cwd=folder)


def runtime_argv(project_dir: Path, settings_hash: str) -> tuple[str, ...]:
    return (
        sys.executable,
        "-m",
        "declare.runtime",
        "--project-dir",
        str(project_dir),
        "--settings-hash",
        settings_hash,
    )


def supervised_argv(project_dir: Path) -> tuple[str, ...]:
    """The unit's ExecStart: the runtime that waits for a record to claim, never exits on
    its own (systemd restarts it when it dies) and starts no keeper."""
    return (sys.executable, "-m", "declare.runtime", "--project-dir", str(project_dir),
            "--supervised")  # fmt: skip


def keeper_argv(state_dir: Path) -> tuple[str, ...]:
    return (sys.executable, "-m", "declare.runtime.keeper", "--state-dir", str(state_dir))


def alive(proc: procs.ProcessId | None) -> bool:
    return proc is not None and procs.is_running(proc)


class ProcessRuntime:
    """`declare.ports.RuntimeControl` for the runtime of the project in `project_dir`.
    `expected_env`: the names of the variables this apply's runtime would act with (told
    apart from a supervised runtime's when their hashes differ)."""

    def __init__(
        self,
        project_dir: Path,
        state_dir: Path,
        supervisor: str = "declare",
        expected_env: frozenset[str] = frozenset(),
    ) -> None:
        self.project_dir = project_dir
        self.state_dir = state_dir
        self.supervisor = supervisor
        self.expected_env = expected_env

    def status(self) -> RuntimeStatus | None:
        record = read_record(self.state_dir)
        if record is None or not alive(record.runtime) or stopping(self.state_dir):
            return None
        assert record.runtime is not None
        keeper = record.keeper.pid if alive(record.keeper) and record.keeper else None
        return RuntimeStatus(
            record.runtime.pid, keeper, record.started_at, record.settings_hash, record.supervisor
        )

    def start(self, settings_hash: str) -> None:
        """Start the runtime and wait until it has recorded itself (it then starts its
        keeper); RuntimeStartError with its log's tail when it exits or stays silent.
        Under systemd: hand over to the unit's runtime (`hand_over`)."""
        folder = runtime_dir(self.state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STOP_MARK).unlink(missing_ok=True)
        if self.supervisor == SYSTEMD:
            self.hand_over(settings_hash)
            return
        argv = runtime_argv(self.project_dir, settings_hash)
        with locked_record(self.state_dir):
            write_record(
                self.state_dir, RuntimeRecord(None, None, argv, time.time(), settings_hash)
            )
        proc = spawn(self.state_dir, argv, RUNTIME_LOG)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            record = read_record(self.state_dir)
            if record is not None and record.runtime == proc:
                return
            if not procs.is_running(proc):
                break
            time.sleep(0.05)
        procs.stop(proc, grace_seconds=2.0)
        raise RuntimeStartError(
            f"the runtime did not start ({folder / RUNTIME_LOG}):\n"
            + procs.log_tail(folder / RUNTIME_LOG, 20)
        )

    def hand_over(self, settings_hash: str) -> None:
        """Write a fresh record for the unit's runtime and wait until it claims it;
        RuntimeStartError when none does in time, or when its environment differs from
        this apply's (then it is left waiting, acting on nothing)."""
        argv = supervised_argv(self.project_dir)
        with locked_record(self.state_dir):
            write_record(
                self.state_dir,
                RuntimeRecord(None, None, argv, time.time(), settings_hash, SYSTEMD),
            )
        deadline = time.monotonic() + HAND_OVER_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            record = read_record(self.state_dir)
            if record is None:
                break
            if alive(record.runtime) and record.env_hash == settings_hash:
                return
            if record.env_hash and record.env_hash != settings_hash:
                self._refused(record)
            time.sleep(0.05)
        raise RuntimeStartError(
            f"runtime.supervisor is systemd and no runtime took the endpoints over within "
            f"{HAND_OVER_TIMEOUT_SECONDS:g} s: is its unit running? `declare runtime unit` "
            "writes it; see the README's 'The runtime under systemd'"
        )

    def _refused(self, record: RuntimeRecord) -> None:
        (runtime_dir(self.state_dir) / STOP_MARK).touch()
        if record.runtime is not None:
            procs.stop(record.runtime, grace_seconds=10.0)  # systemd starts a waiting one
        theirs = set(record.env_names)
        missing = sorted(self.expected_env - theirs)
        extra = sorted(theirs - self.expected_env)
        if missing or extra:
            what = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"not in this apply's environment: {', '.join(extra)}" if extra else "",
                )
                if part
            )
        else:
            what = (
                "the same variables with other values, or other runtime settings in "
                f"declare.yaml (it read: {', '.join(sorted(theirs)) or 'none'})"
            )
        raise RuntimeStartError(
            "the runtime under systemd does not act with this apply's environment: "
            f"{what}. Put the variables in its unit's EnvironmentFile (`declare runtime "
            "unit` names it) and apply again; it takes nothing over until they agree"
        )

    def stop(self) -> None:
        """Stop it and its keeper for good. Under systemd the unit starts a new runtime,
        which waits (the stop mark) until an apply hands it the endpoints."""
        folder = runtime_dir(self.state_dir)
        if not folder.is_dir():
            return
        (folder / STOP_MARK).touch()
        record = read_record(self.state_dir)
        if record is not None:
            for proc in (record.keeper, record.runtime):
                if proc is not None:
                    procs.stop(proc, grace_seconds=10.0)
        (folder / RECORD).unlink(missing_ok=True)
