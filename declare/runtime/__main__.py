"""`python -m declare.runtime --project-dir DIR --settings-hash H`: the runtime process.

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
from pathlib import Path

from declare import procs
from declare.errors import DeclareError
from declare.project import open_project
from declare.runtime.loop import Runtime
from declare.runtime_control import (
    KEEPER_LOG,
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


def _me() -> procs.ProcessId | None:
    import os

    started = procs.start_time_of(os.getpid())
    return procs.ProcessId(os.getpid(), started) if started is not None else None


def claim(state_dir: Path) -> bool:
    """Record this process as the runtime; False when another live runtime is recorded."""
    me = _me()
    with locked_record(state_dir):
        record = read_record(state_dir)
        if record is None or stopping(state_dir):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m declare.runtime")
    parser.add_argument("--project-dir", type=Path, required=True)
    parser.add_argument("--settings-hash", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    restore_environment()
    project = open_project(args.project_dir)
    state_dir = project.config.state_dir
    if not claim(state_dir):
        log.info("another runtime runs, or the runtime is being stopped: exiting")
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runtime = Runtime(project, sys.stdout)
    me = _me()
    log.info("runtime pid %s watching %s", me.pid if me else "?", args.project_dir)
    while not stop.is_set():
        record = read_record(state_dir)
        if record is None or stopping(state_dir) or record.runtime != me:
            log.info("the runtime is stopped (or replaced): exiting")
            return 0
        ensure_keeper(state_dir)
        try:
            runtime.tick()
        except DeclareError as exc:
            log.warning("tick failed: %s", exc)
            project.clock.sleep(project.config.runtime.poll_seconds)
        except Exception:
            log.exception("tick failed")
            project.clock.sleep(project.config.runtime.poll_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
