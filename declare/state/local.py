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
The check of serial/lineage and the replace happen under a short `flock` on the folder, so
concurrent writers serialize even when they do not take the state lock.

The lock is two files. The holder keeps an `flock` on the guard file for as long as it holds
the lock (the kernel drops it when the holder dies), and creates the record file with
O_CREAT|O_EXCL. A record without a live flock holder is a dead run's lock: the next locker
replaces it and says so (`LockInfo.replaced`, and a warning on the `declare.state` logger).
`force_unlock` also works against a live but hung holder: it removes the record and unlinks
the guard, so new lockers flock a fresh guard file; the hung holder's later `unlock` then
leaves the new lock alone. force-unlock is, as in Terraform, for runs that are gone or stuck.

Linux/macOS local file systems (flock); not for NFS or between threads of one process.
Knows nothing of what the document means (see `declare.state.document`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from declare.errors import StateError
from declare.state.backend import (
    LockInfo,
    StateBackend,
    check_lock_args,
    decode_state,
    encode_state,
    locked_error,
    next_state,
    poll_delays,
)

STATE_FILE = "declare.tfstate.json"
BACKUP_FILE = STATE_FILE + ".backup"
LOCK_FILE = "declare.tfstate.lock.json"
GUARD_FILE = ".declare.tfstate.lock.flock"
TEMP_MARK = ".tmp-"  # temp files: ".<final name>.tmp-<hex>"

# A writer waits this long for another writer's few milliseconds of check-and-replace.
WRITE_MUTEX_TIMEOUT = 60.0

log = logging.getLogger("declare.state")


@dataclass(frozen=True)
class _Held:
    info: LockInfo
    guard_fd: int


class LocalStateBackend(StateBackend):
    """State in `state_dir/declare.tfstate.json`; see the module docstring."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / STATE_FILE
        self.backup_path = self.state_dir / BACKUP_FILE
        self.lock_path = self.state_dir / LOCK_FILE
        self.guard_path = self.state_dir / GUARD_FILE
        self._held: _Held | None = None

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
                temp = self._write_temp(STATE_FILE, data)
                if stored is not None:
                    self._keep_backup()
                os.replace(temp, self.path)
                os.fsync(dir_fd)
        except OSError as exc:
            raise StateError(f"cannot write the state file {self.path}: {_reason(exc)}") from None
        result: dict[str, Any] = json.loads(data)
        return result

    # ---- lock ------------------------------------------------------------------------

    def lock(self, operation: str, timeout_seconds: float) -> LockInfo:
        check_lock_args(operation, timeout_seconds)
        if self._held is not None:
            raise StateError(
                f"this process already holds the lock on {self.path} "
                f"({self._held.info.id}, for {self._held.info.operation})"
            )
        self._make_dir()
        try:
            guard_fd = self._take_guard()
            if guard_fd is None:
                for delay in poll_delays(timeout_seconds):
                    time.sleep(delay)
                    guard_fd = self._take_guard()
                    if guard_fd is not None:
                        break
            if guard_fd is None:
                raise locked_error(self._read_lock_record(), str(self.lock_path), timeout_seconds)
            try:
                info = self._write_lock_record(operation)
            except BaseException:
                os.close(guard_fd)
                raise
        except OSError as exc:
            raise StateError(f"cannot lock the state at {self.lock_path}: {_reason(exc)}") from None
        self._held = _Held(info, guard_fd)
        return info

    def unlock(self, lock_id: str) -> None:
        held = self._held
        if held is None or held.info.id != lock_id:
            current = self._read_lock_record()
            now = (
                f"the state is locked as {current.id} by {current.who} (pid {current.pid})"
                if current is not None
                else "the state is not locked"
            )
            raise StateError(
                f"cannot unlock {self.path}: lock {lock_id} is not held by this process ({now}). "
                f"To remove another run's lock use: declare force-unlock <ID>"
            )
        try:
            current = self._read_lock_record()
            if current is not None and current.id == lock_id:
                _unlink(self.lock_path)
            else:
                log.warning(
                    "the lock %s on %s was removed by force-unlock while this run held it; "
                    "another run may have written the state since",
                    lock_id,
                    self.path,
                )
            if _same_file(self.guard_path, held.guard_fd):
                _unlink(self.guard_path)
        finally:
            self._held = None
            os.close(held.guard_fd)  # drops the flock

    def force_unlock(self, lock_id: str) -> None:
        if self._held is not None and self._held.info.id == lock_id:
            self.unlock(lock_id)
            return
        try:
            guard_fd = self._take_guard()
        except OSError as exc:
            raise StateError(f"cannot unlock {self.lock_path}: {_reason(exc)}") from None
        if guard_fd is not None:
            # No live holder: while we hold the guard nobody else can take the lock.
            try:
                self._check_lock_id(lock_id, self._read_lock_record())
                _unlink(self.lock_path)
                _unlink(self.guard_path)
            finally:
                os.close(guard_fd)
            return
        # A live (hung?) holder: remove its record, then cut new lockers loose from its flock.
        self._check_lock_id(lock_id, self._read_lock_record())
        aside = self._temp_name(LOCK_FILE)
        try:
            os.rename(self.lock_path, aside)
        except FileNotFoundError:
            raise StateError(
                f"cannot unlock {self.lock_path}: the lock was released meanwhile"
            ) from None
        moved = self._read_lock_record(aside)
        if moved is None or moved.id != lock_id:  # it changed hands between check and move
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.lock_path)
            _unlink(aside)
            self._check_lock_id(lock_id, moved)
        _unlink(aside)
        _unlink(self.guard_path)

    def lock_info(self) -> LockInfo | None:
        return self._read_lock_record()

    # ---- internals -------------------------------------------------------------------

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
                f"cannot create the state folder {self.state_dir}: {_reason(exc)}"
            ) from None

    @contextlib.contextmanager
    def _write_mutex(self) -> Iterator[int]:
        """An flock on the state folder for one check-and-replace; yields the folder's fd."""
        dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if not _try_flock(dir_fd):
                for delay in poll_delays(WRITE_MUTEX_TIMEOUT):
                    time.sleep(delay)
                    if _try_flock(dir_fd):
                        break
                else:
                    raise StateError(
                        f"another process has been writing {self.path} for over "
                        f"{WRITE_MUTEX_TIMEOUT:g} s; is it stopped?"
                    )
            yield dir_fd
        finally:
            os.close(dir_fd)

    def _temp_name(self, final: str) -> Path:
        return self.state_dir / f".{final}{TEMP_MARK}{secrets.token_hex(6)}"

    def _remove_temp_files(self) -> None:
        """Temp files of writers that crashed (only called under the write mutex)."""
        for name in (STATE_FILE, BACKUP_FILE):
            for leftover in self.state_dir.glob(f".{name}{TEMP_MARK}*"):
                _unlink(leftover)

    def _write_temp(self, final: str, data: bytes) -> Path:
        temp = self._temp_name(final)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return temp

    def _keep_backup(self) -> None:
        """Make the current state file also the backup (before it is replaced)."""
        temp = self._temp_name(BACKUP_FILE)
        try:
            os.link(self.path, temp)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                raise
            # A file system without hard links: copy instead.
            temp = self._write_temp(BACKUP_FILE, self.path.read_bytes())
        os.replace(temp, self.backup_path)

    def _take_guard(self) -> int | None:
        """An fd holding the flock on the current guard file, or None when a holder lives."""
        while True:
            fd = os.open(self.guard_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if not _try_flock(fd):
                os.close(fd)
                return None
            if _same_file(self.guard_path, fd):
                os.fchmod(fd, 0o600)
                return fd
            # The file was unlinked (unlock, force-unlock) after we opened it: open anew.
            os.close(fd)

    def _write_lock_record(self, operation: str) -> LockInfo:
        """Create the lock record; called holding the guard, so any record there is stale."""
        replaced: LockInfo | None = None
        if self.lock_path.exists():
            replaced = self._read_lock_record(retry=False)
            log.warning(
                "took over the lock on %s left by a run that is gone: %s",
                self.path,
                f"{replaced.id} ({replaced.operation} by {replaced.who}, pid {replaced.pid}, "
                f"since {replaced.created})"
                if replaced is not None
                else "its record was unreadable",
            )
            _unlink(self.lock_path)
        info = LockInfo.new(operation, replaced)
        data = (json.dumps(info.to_json(), indent=2) + "\n").encode()
        fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return info

    def _read_lock_record(self, path: Path | None = None, retry: bool = True) -> LockInfo | None:
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

    def _check_lock_id(self, lock_id: str, current: LockInfo | None) -> None:
        if current is None:
            raise StateError(
                f"cannot unlock {self.path}: it is not locked "
                f"({self.lock_path} does not exist or is unreadable)"
            )
        if current.id != lock_id:
            raise StateError(
                f"cannot unlock {self.path}: it is locked as {current.id}, not {lock_id}.\n"
                f"Lock info:\n{current.describe()}"
            )


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink(path: Path | str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
