"""`python -m declare.runtime.keeper --state-dir DIR`: restarts the runtime when it dies.

It does nothing else: every 0.2 s it reads `runtime.json`; when the runtime recorded there
is not running, it starts it again with the recorded command (in the environment it was
itself started with, the runtime's), and records it. It exits when the runtime is being
stopped (the stop mark), when the record is gone, or when another keeper is recorded. The
runtime, for its part, starts a new keeper when this one dies.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from declare import procs
from declare.runtime_control import (
    RUNTIME_LOG,
    alive,
    locked_record,
    read_record,
    spawn,
    stopping,
    update_record,
)

log = logging.getLogger("declare.runtime.keeper")
WATCH_SECONDS = 0.2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m declare.runtime.keeper")
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    started = procs.start_time_of(os.getpid())
    me = procs.ProcessId(os.getpid(), started or 0)
    state_dir: Path = args.state_dir
    with locked_record(state_dir):
        record = read_record(state_dir)
        if record is None or (record.keeper not in (None, me) and alive(record.keeper)):
            return 0
    update_record(state_dir, keeper=me)
    log.info("keeper pid %d watching the runtime of %s", me.pid, state_dir)
    while True:
        time.sleep(WATCH_SECONDS)
        record = read_record(state_dir)
        if record is None or stopping(state_dir) or record.keeper != me:
            return 0
        if record.supervisor != "declare":
            return 0  # systemd restarts this runtime
        if alive(record.runtime) or not record.argv:
            continue
        runtime = spawn(state_dir, record.argv, RUNTIME_LOG)
        update_record(state_dir, runtime=runtime)
        log.warning("the runtime was not running: started it again (pid %d)", runtime.pid)


if __name__ == "__main__":
    sys.exit(main())
