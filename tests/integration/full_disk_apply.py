"""`python -m tests.integration.full_disk_apply ARGS...`: the `declare` CLI with ARGS on a
disk that fills up the moment an apply moves traffic. Test-only: nothing of it ships, and
the product has no fault hook; it patches this one child process.

From the first `Ledger.switch` on, every state write of the local backend fails as a full
disk fails it: `declare.state.local_files.write_all` writes half of the temp file, waits
`HOLD_SECONDS` (a slow, full disk; requests meanwhile reach the switched-to replicas) and
raises OSError(ENOSPC). So the switch's push reaches the gateway, its state write fails,
and so does every state write after it (the undo's too). When the environment names a path
in `GOOD_STATE_ENV`, the state file as it was when the disk filled is copied there first.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from declare.apply.ledger import Ledger
from declare.cli import main
from declare.state import local_files
from declare.state.document import State
from declare.state.local import STATE_FILE

GOOD_STATE_ENV = "FULL_DISK_GOOD_STATE"
HOLD_SECONDS = 1.0


def install(state_dir: Path, good_copy: Path | None) -> None:
    full: list[bool] = []
    write_all = local_files.write_all
    switch = Ledger.switch

    def failing_write(fd: int, data: bytes) -> None:
        if not full:
            write_all(fd, data)
            return
        write_all(fd, data[: len(data) // 2])
        time.sleep(HOLD_SECONDS)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def filling_switch(self: Ledger, change: Callable[[State], State], what: str) -> None:
        if not full:
            if good_copy is not None:
                shutil.copyfile(state_dir / STATE_FILE, good_copy)
            full.append(True)
        switch(self, change, what)

    local_files.write_all = failing_write  # type: ignore[assignment]
    Ledger.switch = filling_switch  # type: ignore[method-assign]


if __name__ == "__main__":
    folder = Path(sys.argv[-1])
    good = os.environ.get(GOOD_STATE_ENV)
    install(folder / "state", Path(good) if good else None)
    main()
