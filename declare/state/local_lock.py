"""The local state backend's lock: a record file and an flock'd guard file in the state folder.

    declare.tfstate.lock.json     the lock record (LockInfo JSON) while the state is locked
    .declare.tfstate.lock.flock   the lock's liveness guard (held with flock by the holder)

The holder keeps an `flock` on the guard file for as long as it holds the lock (the kernel
drops it when the holder dies), and creates the record file with O_CREAT|O_EXCL. A record
without a live flock holder is a dead run's lock: `claim` replaces it and says so.
`force_remove` also works against a live but hung holder: it removes the record and unlinks
the guard, so new lockers flock a fresh guard file; the hung holder's later `release` then
leaves the new lock alone.

Does: try the guard without waiting, read and write the record, release a lock this process
holds, force-remove another run's. Does not: wait for a busy lock (`lock_with_retry` polls
`try_take`), remember which lock this process holds (the backend keeps the `HeldLock`),
create the state folder, or touch the state file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from declare.errors import StateError
from declare.state.backend import LockInfo, warn_takeover, wrong_lock_error
from declare.state.local_files import (
    create_private,
    reason,
    same_file,
    temp_name,
    try_flock,
    unlink,
)

LOCK_FILE = "declare.tfstate.lock.json"
GUARD_FILE = ".declare.tfstate.lock.flock"

log = logging.getLogger("declare.state")


@dataclass(frozen=True)
class FileLock:
    """The lock files of the state folder `folder`; `state_path` names the state in messages.

    A `LockAttempt` (the keeper is the fd holding the guard's flock). Holds no state of its
    own: every method looks at the files.
    """

    folder: Path
    state_path: Path

    @property
    def lock_path(self) -> Path:
        return self.folder / LOCK_FILE

    @property
    def guard_path(self) -> Path:
        return self.folder / GUARD_FILE

    @property
    def where(self) -> str:
        return str(self.lock_path)

    # ---- taking (driven by lock_with_retry) ------------------------------------------

    def try_take(self) -> int | None:
        """An fd holding the flock on the current guard file, or None when a holder lives."""
        while True:
            fd = os.open(self.guard_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if not try_flock(fd):
                os.close(fd)
                return None
            if same_file(self.guard_path, fd):
                os.fchmod(fd, 0o600)
                return fd
            # The file was unlinked (unlock, force-unlock) after we opened it: open anew.
            os.close(fd)

    def holder(self) -> LockInfo | None:
        return self.read_record()

    def claim(self, keeper: int, operation: str) -> LockInfo:
        """Write this process's record holding the guard `keeper`; closes it on failure."""
        try:
            return self._write_record(operation)
        except BaseException:
            os.close(keeper)
            raise

    # ---- releasing -------------------------------------------------------------------

    def release(self, lock_id: str, guard_fd: int) -> None:
        """Remove the lock `lock_id` this process holds with `guard_fd`, and close that fd.

        A record that is no longer `lock_id` (force-unlock, then another run's lock) stays.
        """
        try:
            current = self.read_record()
            if current is not None and current.id == lock_id:
                unlink(self.lock_path)
            else:
                log.warning(
                    "the lock %s on %s was removed by force-unlock while this run held it; "
                    "another run may have written the state since",
                    lock_id,
                    self.state_path,
                )
            if same_file(self.guard_path, guard_fd):
                unlink(self.guard_path)
        finally:
            os.close(guard_fd)  # drops the flock

    def force_remove(self, lock_id: str) -> None:
        """Remove the lock `lock_id` whoever holds it, alive or not; StateError when the
        state is not locked as `lock_id`."""
        try:
            guard_fd = self.try_take()
        except OSError as exc:
            raise StateError(f"cannot unlock {self.lock_path}: {reason(exc)}") from None
        if guard_fd is None:
            self._remove_live(lock_id)
            return
        # No live holder: while we hold the guard nobody else can take the lock.
        try:
            self._check_lock_id(lock_id, self.read_record())
            unlink(self.lock_path)
            unlink(self.guard_path)
        finally:
            os.close(guard_fd)

    # ---- the record ------------------------------------------------------------------

    def read_record(self, path: Path | None = None, retry: bool = True) -> LockInfo | None:
        """The lock record, None when there is none or it is unreadable.

        A record is unreadable for a moment while its holder writes it; `retry` waits that out.
        """
        path = path or self.lock_path
        for attempt in range(5 if retry else 1):
            if attempt:
                time.sleep(0.02)
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StateError(f"cannot read the lock file {path}: {exc.strerror}") from None
            try:
                return LockInfo.from_json(json.loads(raw), str(path))
            except (ValueError, StateError):
                continue
        return None

    def _write_record(self, operation: str) -> LockInfo:
        """Create the lock record; called holding the guard, so any record there is stale."""
        replaced: LockInfo | None = None
        if self.lock_path.exists():
            replaced = self.read_record(retry=False)
            warn_takeover(str(self.state_path), replaced)
            unlink(self.lock_path)
        info = LockInfo.new(operation, replaced)
        create_private(self.lock_path, (json.dumps(info.to_json(), indent=2) + "\n").encode())
        return info

    def _remove_live(self, lock_id: str) -> None:
        """Remove the record of a live (hung?) holder, then cut new lockers loose from its
        flock by unlinking the guard."""
        self._check_lock_id(lock_id, self.read_record())
        aside = temp_name(self.folder, LOCK_FILE)
        try:
            os.rename(self.lock_path, aside)
        except FileNotFoundError:
            raise StateError(
                f"cannot unlock {self.lock_path}: the lock was released meanwhile"
            ) from None
        moved = self.read_record(aside)
        if moved is None or moved.id != lock_id:  # it changed hands between check and move
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.lock_path)
            unlink(aside)
            self._check_lock_id(lock_id, moved)
        unlink(aside)
        unlink(self.guard_path)

    def _check_lock_id(self, lock_id: str, current: LockInfo | None) -> None:
        if current is None:
            raise StateError(
                f"cannot unlock {self.state_path}: it is not locked "
                f"({self.lock_path} does not exist or is unreadable)"
            )
        if current.id != lock_id:
            raise wrong_lock_error(str(self.state_path), lock_id, current.id, current)
