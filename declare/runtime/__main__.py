"""`python -m declare.runtime --project-dir DIR --settings-hash H`: the runtime process.
`python -m declare.runtime --project-dir DIR --supervised`: the same under systemd.

Started by apply (`declare.runtime_control.ProcessRuntime.start`) and by its keeper when it
died; it records itself in `state/runtime/runtime.json`, starts its keeper again whenever
the keeper is gone, and ticks (`declare.runtime.loop`) until SIGTERM, the stop mark, or the
record's disappearance (destroy). A tick that fails is logged and the next one comes; the
process never dies of an error it can name.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from declare import procs
from declare.errors import DeclareError
from declare.project import Project, open_project
from declare.runtime.loop import Runtime
from declare.runtime_control import (
    KEEPER_LOG,
    SYSTEMD,
    alive,
    keeper_argv,
    locked_record,
    read_record,
    restore_environment,
    spawn,
    stopping,
    update_record,
)

log = logging.getLogger("declare.runtime")
WAIT_SECONDS = 0.5


def _me() -> procs.ProcessId | None:
    import os

    started = procs.start_time_of(os.getpid())
    return procs.ProcessId(os.getpid(), started) if started is not None else None


def claim(state_dir: Path, supervisor: str = "declare") -> bool:
    """Record this process as the runtime; False when another live runtime is recorded,
    or the record is another supervisor's."""
    me = _me()
    with locked_record(state_dir):
        record = read_record(state_dir)
        if record is None or stopping(state_dir) or record.supervisor != supervisor:
            return False
        if record.runtime is not None and record.runtime != me and alive(record.runtime):
            return False
    return update_record(state_dir, runtime=me) is not None


def ensure_keeper(state_dir: Path) -> None:
    record = read_record(state_dir)
    if record is None or stopping(state_dir) or alive(record.keeper):
        return
    keeper = spawn(state_dir, keeper_argv(state_dir), KEEPER_LOG)
    update_record(state_dir, keeper=keeper)
    log.info("started the keeper (pid %d)", keeper.pid)


def serve(project: Project, stop: threading.Event, keeper: bool) -> None:
    """Tick until stopped, or until the record is no longer this process's."""
    state_dir = project.config.state_dir
    runtime = Runtime(project, sys.stdout)
    me = _me()
    log.info("runtime pid %s watching %s", me.pid if me else "?", project.config.project_dir)
    update_record(
        state_dir,
        env_hash=project.runtime_settings_hash(),
        env_names=tuple(sorted(project.runtime_environment())),
    )
    while not stop.is_set():
        record = read_record(state_dir)
        if record is None or stopping(state_dir) or record.runtime != me:
            log.info("the runtime is stopped (or replaced)")
            return
        if keeper:
            ensure_keeper(state_dir)
        try:
            runtime.tick()
        except DeclareError as exc:
            log.warning("tick failed: %s", exc)
            project.clock.sleep(project.config.runtime.poll_seconds)
        except Exception:
            log.exception("tick failed")
            project.clock.sleep(project.config.runtime.poll_seconds)


def supervised(project_dir: Path, stop: threading.Event) -> int:
    """Under systemd: wait for a record an apply wrote after this process started, then
    claim it when this process acts with the environment that apply had, or refuse it
    (writing the names it has, for apply's message) and wait for the next one. A record
    older than this process's start goes to an exit, so that systemd starts a runtime that
    reads the unit's EnvironmentFile as it is now."""
    born = time.time()
    refused = 0.0
    while not stop.is_set():
        try:
            project = open_project(project_dir)
        except DeclareError as exc:
            log.warning("cannot open the project: %s", exc)
            stop.wait(WAIT_SECONDS)
            continue
        state_dir = project.config.state_dir
        record = read_record(state_dir)
        if record is None or stopping(state_dir) or record.supervisor != SYSTEMD:
            stop.wait(WAIT_SECONDS)
            continue
        if record.runtime is None and record.started_at > born:
            return 0  # a hand-over newer than this process: systemd starts a fresh one
        if record.settings_hash != project.runtime_settings_hash():
            if refused != record.started_at:
                refused = record.started_at
                names = tuple(sorted(project.runtime_environment()))
                update_record(state_dir, env_hash=project.runtime_settings_hash(),
                              env_names=names)  # fmt: skip
                log.warning("refused the endpoints: this environment differs from apply's")
            stop.wait(WAIT_SECONDS)
            continue
        if claim(state_dir, SYSTEMD):
            serve(project, stop, keeper=False)
        else:
            stop.wait(WAIT_SECONDS)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m declare.runtime")
    parser.add_argument("--project-dir", type=Path, required=True)
    parser.add_argument("--settings-hash", default="")
    parser.add_argument("--supervised", action="store_true", help="run under systemd")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    restore_environment()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.supervised:
        return supervised(args.project_dir, stop)
    project = open_project(args.project_dir)
    if not claim(project.config.state_dir):
        log.info("another runtime runs, or the runtime is being stopped: exiting")
        return 0
    serve(project, stop, keeper=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
