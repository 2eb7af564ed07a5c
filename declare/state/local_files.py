"""POSIX file primitives of the local state backend (`declare.state.local`).

Does: take an `flock` without waiting, tell whether a path still names an open file, write
a whole buffer, create a private (0600) file durably, name and remove temp files, and word
an OSError for a message. Does not: know what a state or a lock is, wait or retry, or turn
OSError into StateError (callers do, naming their file). Every call goes through the `os`
module's attributes, so tests that count or cut file system calls see them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path

TEMP_MARK = ".tmp-"  # temp files: ".<final name>.tmp-<hex>"


def try_flock(fd: int) -> bool:
    """Take an exclusive flock on `fd` without waiting; False when another file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd` (False when it is gone)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def create_private(path: Path, data: bytes) -> None:
    """Create `path` (it must not exist) as a 0600 file, whatever the umask, holding `data`,
    fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(folder: Path, final: str) -> Path:
    """A new temp file name in `folder` for a file that becomes `final`."""
    return folder / f".{final}{TEMP_MARK}{secrets.token_hex(6)}"


def unlink(path: Path | str) -> None:
    """Remove `path`; nothing when it is gone already."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
