"""Small pieces both process-owning providers (local, docker) need alike.

`exclusive(path)` serializes work guarded by a lock file (replica records, a wheel-cache
entry) between threads of one declare and between declare processes (a thread lock per file,
then flock on it). `loopback_host(value, field, why)` checks a configured listen address.
Nothing here knows about replicas or models.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import threading
from collections.abc import Iterator
from pathlib import Path

from declare.errors import ConfigError

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold `lock_path` exclusively: against other threads here, and other processes (flock)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    key = str(lock_path.resolve())
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with thread_lock, open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def loopback_host(host: object, field: str, why: str) -> str:
    """`host` as an IPv4 loopback address ('localhost' becomes 127.0.0.1), or a ConfigError
    that names `field` and says `why` only loopback is allowed."""
    if not isinstance(host, str):
        raise ConfigError(f"{field}: must be a string, got {host!r}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if not isinstance(address, ipaddress.IPv4Address) or not address.is_loopback:
        raise ConfigError(
            f"{field}: {host!r} is not an IPv4 loopback address; {why} (e.g. 127.0.0.1)"
        )
    return host
