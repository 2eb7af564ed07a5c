"""The local file state backend: one JSON file in a folder, a lock file beside it.

Files in `state_dir` (created 0700 on first write or lock; every file 0600):

    declare.tfstate.json          the state
    declare.tfstate.json.backup   the copy before the last write
    declare.tfstate.lock.json     the lock record (LockInfo JSON) while the state is locked
    .declare.tfstate.lock.flock   the lock's liveness guard (held with flock by the holder)

Writes are atomic: the new state goes to a temp file in the same folder, is fsynced, the
current state is hard-linked to the backup name, the temp file replaces the state
(`os.replace`), and the folder is fsynced. A crash (SIGKILL, power loss) at any point leaves
either the old or the new state readable; leftover temp files are removed by the next write.
A write that fails (ENOSPC, EIO, EACCES) removes its temp files and leaves the state file as
it was; its StateError names the file and the reason.
The check of serial/lineage and the replace happen under a short `flock` on the folder, so
concurrent writers serialize even when they do not take the state lock.

The lock is two files (`declare.state.local_lock` says how they work): the holder keeps an
`flock` on the guard, which the kernel drops when the holder dies, so a dead run's record is
replaced by the next locker (`LockInfo.replaced`, and a warning on the `declare.state`
logger). `force_unlock` also works against a live but hung holder. force-unlock is, as in
Terraform, for runs that are gone or stuck.

This module does reading, the atomic write and the bookkeeping of the lock this process
holds; the lock files are `local_lock`'s, the waiting is `backend.lock_with_retry`'s, the
file primitives are `local_files`'. Linux/macOS local file systems (flock); not for NFS or
between threads of one process. Knows nothing of what the document means (see
`declare.state.document`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from declare.errors import StateError
from declare.state.backend import (
    HeldLock,
    LockInfo,
    StateBackend,
    check_held,
    decode_state,
    encode_state,
    lock_with_retry,
    next_state,
    poll,
)
from declare.state.local_files import (
    TEMP_MARK,
    create_private,
    reason,
    temp_name,
    try_flock,
    unlink,
)
from declare.state.local_lock import GUARD_FILE, LOCK_FILE, FileLock

__all__ = [
    "BACKUP_FILE",
    "GUARD_FILE",
    "LOCK_FILE",
    "STATE_FILE",
    "TEMP_MARK",
    "WRITE_MUTEX_TIMEOUT",
    "LocalStateBackend",
]

STATE_FILE = "declare.tfstate.json"
BACKUP_FILE = STATE_FILE + ".backup"

# A writer waits this long for another writer's few milliseconds of check-and-replace.
WRITE_MUTEX_TIMEOUT = 60.0


class LocalStateBackend(StateBackend):
    """State in `state_dir/declare.tfstate.json`; see the module docstring.

    Holds the paths, and the lock this instance took (`_held`: its record and the fd of
    the guard's flock) until it is unlocked.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / STATE_FILE
        self.backup_path = self.state_dir / BACKUP_FILE
        self._lock = FileLock(self.state_dir, self.path)
        self.lock_path = self._lock.lock_path
        self.guard_path = self._lock.guard_path
        self._held: HeldLock[int] | None = None

    def __repr__(self) -> str:
        return f"LocalStateBackend({str(self.state_dir)!r})"

    @property
    def location(self) -> str:
        return str(self.path)

    # ---- read / write ----------------------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc.strerror}") from None
        return decode_state(raw, str(self.path), self._recovery_hint())

    def write(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        self._make_dir()
        try:
            with self._write_mutex() as dir_fd:
                self._remove_temp_files()
                stored = self.read()
                new = next_state(stored, doc, str(self.path))
                data = encode_state(new, str(self.path))
                self._replace_state(data, stored is not None, dir_fd)
        except OSError as exc:
            raise StateError(
                f"cannot write the state file {self.path}: {reason(exc)}; it still holds "
                "the state before this write"
            ) from None
        result: dict[str, Any] = json.loads(data)
        return result

    # ---- lock ------------------------------------------------------------------------

    def lock(self, operation: str, timeout_seconds: float) -> LockInfo:
        self._held = lock_with_retry(
            operation, timeout_seconds, self._held, str(self.path), self._lock_attempt
        )
        return self._held.info

    def unlock(self, lock_id: str) -> None:
        held = check_held(self._held, lock_id, str(self.path), self.lock_info)
        self._held = None
        self._lock.release(lock_id, held.keeper)

    def force_unlock(self, lock_id: str) -> None:
        if self._held is not None and self._held.info.id == lock_id:
            self.unlock(lock_id)
            return
        self._lock.force_remove(lock_id)

    def lock_info(self) -> LockInfo | None:
        return self._lock.read_record()

    # ---- internals -------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock_attempt(self) -> Iterator[FileLock]:
        """The lock files, in a folder that exists; an OSError is a StateError."""
        self._make_dir()
        try:
            yield self._lock
        except OSError as exc:
            raise StateError(f"cannot lock the state at {self.lock_path}: {reason(exc)}") from None

    def _recovery_hint(self) -> str:
        if self.backup_path.exists():
            return (
                f"The copy before the last write is {self.backup_path}: if it is good, "
                f"copy it over {self.path} (the last write is then lost; plan shows it)."
            )
        return f"There is no backup copy ({self.backup_path} does not exist)."

    def _make_dir(self) -> None:
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"cannot create the state folder {self.state_dir}: {reason(exc)}"
            ) from None

    @contextlib.contextmanager
    def _write_mutex(self) -> Iterator[int]:
        """An flock on the state folder for one check-and-replace; yields the folder's fd."""
        dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if poll(lambda: try_flock(dir_fd) or None, WRITE_MUTEX_TIMEOUT) is None:
                raise StateError(
                    f"another process has been writing {self.path} for over "
                    f"{WRITE_MUTEX_TIMEOUT:g} s; is it stopped?"
                )
            yield dir_fd
        finally:
            os.close(dir_fd)

    def _remove_temp_files(self) -> None:
        """Temp files of writers that crashed (only called under the write mutex)."""
        for name in (STATE_FILE, BACKUP_FILE):
            for leftover in self.state_dir.glob(f".{name}{TEMP_MARK}*"):
                unlink(leftover)

    def _replace_state(self, data: bytes, keep_backup: bool, dir_fd: int) -> None:
        """Write `data` to a temp file, keep the backup, replace the state file; on an
        OSError (ENOSPC, EIO, EACCES) before the replace, remove this write's temp files and
        raise it, the state file untouched (only called under the write mutex)."""
        try:
            temp = self._write_temp(STATE_FILE, data)
            if keep_backup:
                self._keep_backup()
            os.replace(temp, self.path)
        except OSError:
            self._remove_temp_files()
            raise
        os.fsync(dir_fd)

    def _write_temp(self, final: str, data: bytes) -> Path:
        temp = temp_name(self.state_dir, final)
        create_private(temp, data)
        return temp

    def _keep_backup(self) -> None:
        """Make the current state file also the backup (before it is replaced)."""
        temp = temp_name(self.state_dir, BACKUP_FILE)
        try:
            os.link(self.path, temp)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                raise
            # A file system without hard links: copy instead.
            temp = self._write_temp(BACKUP_FILE, self.path.read_bytes())
        os.replace(temp, self.backup_path)
