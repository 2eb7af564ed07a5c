"""State storage: the small interfaces every backend meets, and the rules they all share.

In Terraform's manner (states/statemgr), storage is split into small interfaces:

    StateReader   read() -> the stored document, or None when there is no state yet
    StateWriter   write(doc) -> the stored document, with the serial and lineage it got
    StateLocker   lock / unlock / force_unlock / lock_info / locked (a context manager)
    StateBackend  all three, plus `location` (where the state lives, for messages)

A write is persisted when `write` returns (there is no separate persist step). The rules
of serial and lineage are pure functions here (`next_state`, `check_state`), so every
backend applies them the same way; `tests/state_conformance.py` checks any backend against
them and every backend's tests call it.

The document is plain JSON: `{"format_version": 1, "serial": N, "lineage": "<uuid4>",
...payload}`. The backend owns `serial` and `lineage`; what the payload means is
`declare.state.document`'s business, not this module's.

Locking is shared the same way (Terraform's statemgr.LockWithContext): a backend says how to
try its lock once (`LockAttempt`) and `lock_with_retry` checks the arguments, refuses a
second lock in one process, polls with backoff and words the "locked by another run" error.
The other messages every backend gives about its lock are made here too (`check_held`,
`wrong_lock_error`, `warn_takeover`).

This module touches no file or database: it sleeps between a backend's lock attempts and
logs a takeover on the `declare.state` logger, nothing more. It knows nothing of manifests,
plans or providers.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeGuard, TypeVar

from declare import __version__
from declare.errors import ConfigError, StaleStateError, StateError, StateLockedError

FORMAT_VERSION = 1
HEADER_KEYS = ("format_version", "serial", "lineage")

# Polling for a busy lock: first wait, growth factor, longest wait (seconds).
POLL_FIRST = 0.01
POLL_FACTOR = 2.0
POLL_MAX = 0.25
# The lock's operation while the runtime acts (declare.runtime.loop), and how long any
# other command waits for it beyond its own --lock-timeout.
RUNTIME_OPERATION = "runtime"
RUNTIME_LOCK_WAIT_SECONDS = 300.0

T = TypeVar("T")
K = TypeVar("K")

log = logging.getLogger("declare.state")


@dataclass(frozen=True)
class LockInfo:
    """Who holds the state lock, for what, since when.

    `replaced` is set on the value `lock()` returns when it took over a stale lock whose
    holder had died (it is not stored, and not compared).
    """

    id: str
    operation: str
    who: str
    pid: int
    created: str
    version: str
    replaced: LockInfo | None = field(default=None, compare=False)

    @classmethod
    def new(cls, operation: str, replaced: LockInfo | None = None) -> LockInfo:
        """A fresh lock record for this process."""
        return cls(
            id=str(uuid.uuid4()),
            operation=operation,
            who=f"{_user()}@{socket.gethostname()}",
            pid=os.getpid(),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            version=__version__,
            replaced=replaced,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "who": self.who,
            "pid": self.pid,
            "created": self.created,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> LockInfo:
        """Parse a stored lock record; StateError naming `where` when it is not one."""
        if not isinstance(data, Mapping):
            raise StateError(f"{where}: the lock record is not a JSON object")
        try:
            pid = data["pid"]
            fields = {k: data[k] for k in ("id", "operation", "who", "created", "version")}
        except KeyError as missing:
            raise StateError(f"{where}: the lock record has no {missing}") from None
        if not all(isinstance(v, str) for v in fields.values()) or not _is_int(pid):
            raise StateError(f"{where}: the lock record has a field of the wrong type")
        return cls(pid=pid, **fields)

    def describe(self, indent: str = "  ") -> str:
        """The holder as an aligned block, like Terraform's "Lock Info"."""
        rows = [
            ("ID", self.id),
            ("Operation", self.operation),
            ("Who", self.who),
            ("PID", str(self.pid)),
            ("Version", self.version),
            ("Created", self.created),
        ]
        return "\n".join(f"{indent}{k + ':':<11}{v}" for k, v in rows)


@dataclass(frozen=True)
class HeldLock(Generic[K]):
    """A lock this process holds: its record, and what keeps it alive while held (the guard
    file's descriptor, the lock's database session)."""

    info: LockInfo
    keeper: K


class LockAttempt(Protocol[K]):
    """How one backend tries its lock once; `lock_with_retry` does the waiting.

    `try_take` takes what keeps the lock alive (an flock, an advisory lock) without waiting,
    or returns None while another run holds it; `claim` then records this process as the
    holder (a stale record of a dead run is replaced) and gives up `keeper` when it fails.
    """

    @property
    def where(self) -> str:
        """The lock's place, as the "is locked by another run" message names it."""
        ...

    def try_take(self) -> K | None: ...

    def holder(self) -> LockInfo | None:
        """The current holder's record, for the message (None: none, or unreadable)."""
        ...

    def claim(self, keeper: K, operation: str) -> LockInfo: ...


class StateReader(Protocol):
    def read(self) -> dict[str, Any] | None:
        """The stored document, or None when no state was written yet.

        Raises StateError when the stored state cannot be read (corrupt, newer format).
        """
        ...


class StateWriter(Protocol):
    def write(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Store `doc` durably, by the rules of `next_state`; return what was stored.

        `doc` is not changed. Raises StaleStateError when `doc` would lose another write.
        """
        ...


class StateLocker(Protocol):
    def lock(self, operation: str, timeout_seconds: float) -> LockInfo:
        """Take the lock for `operation`, waiting up to `timeout_seconds` (0: do not wait).

        A lock whose holder died is taken over (see `LockInfo.replaced`). Raises
        StateLockedError naming the holder when the time is up.
        """
        ...

    def unlock(self, lock_id: str) -> None:
        """Release the lock this backend took as `lock_id`; StateError otherwise."""
        ...

    def force_unlock(self, lock_id: str) -> None:
        """Remove the lock `lock_id`, whoever holds it; StateError saying the actual id
        when the state is not locked as `lock_id`."""
        ...

    def lock_info(self) -> LockInfo | None:
        """The current lock record, or None when the state is not locked."""
        ...

    @contextlib.contextmanager
    def locked(self, operation: str, timeout_seconds: float) -> Iterator[LockInfo]:
        """`lock` on entry, `unlock` on exit (also when the body raises)."""
        info = self.lock(operation, timeout_seconds)
        try:
            yield info
        finally:
            self.unlock(info.id)


class StateBackend(StateReader, StateWriter, StateLocker, Protocol):
    """Where one project's state lives. Backends subclass this to inherit `locked`."""

    @property
    def location(self) -> str:
        """Where the state lives, as shown in messages (a path; a URL without secrets)."""
        ...


# ---- the shared rules ----------------------------------------------------------------


def check_state(data: Any, where: str, recovery: str = "") -> dict[str, Any]:
    """`data` as a stored state document, or StateError naming `where` and the problem.

    `recovery` (how to get a good state back) is added to the message of a damaged state,
    not to that of a state written by a newer declare.
    """

    def damaged(problem: str) -> StateError:
        return StateError(f"{where}: {problem}." + (f" {recovery}" if recovery else ""))

    if not isinstance(data, dict):
        raise damaged("the state is not a JSON object")
    version = data.get("format_version")
    if not _is_int(version):
        raise damaged("the state has no integer format_version")
    if version > FORMAT_VERSION:
        raise StateError(
            f"{where}: the state has format_version {version}, written by a newer declare; "
            f"this declare ({__version__}) reads format_version {FORMAT_VERSION}. "
            "Upgrade declare."
        )
    if version != FORMAT_VERSION:
        raise damaged(f"unknown state format_version {version}")
    serial = data.get("serial")
    if not _is_int(serial) or serial < 1:
        raise damaged("the state has no positive integer serial")
    lineage = data.get("lineage")
    if not isinstance(lineage, str) or not lineage:
        raise damaged("the state has no lineage")
    return data


def next_state(
    stored: Mapping[str, Any] | None, doc: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """The document to store when `doc` is written over `stored` (None: no state yet).

    - No stored state: the lineage of `doc` when it has one (moving a state between
      backends keeps its history), else a new uuid4; serial = serial of `doc` (0 if none) + 1.
    - Stored state: `doc` must carry the stored lineage and a serial no lower than the
      stored one, else StaleStateError (someone else wrote meanwhile, or it is another
      state's history). The new serial is one above the higher of the two, so a serial is
      never given twice in one lineage.
    The header comes first, then the payload of `doc` in its order. Pure; `doc` is not changed.
    """
    version = doc.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise StateError(
            f"cannot write state with format_version {version!r} to {where}: "
            f"this declare writes format_version {FORMAT_VERSION}"
        )
    serial = doc.get("serial")
    lineage = doc.get("lineage")
    if serial is not None and (not _is_int(serial) or serial < 0):
        raise StateError(f"cannot write state to {where}: serial {serial!r} is not an integer >= 0")
    if lineage is not None and not isinstance(lineage, str):
        raise StateError(f"cannot write state to {where}: lineage {lineage!r} is not a string")
    payload = {k: v for k, v in doc.items() if k not in HEADER_KEYS}

    if stored is None:
        new_lineage = lineage or str(uuid.uuid4())
        new_serial = (serial or 0) + 1
    else:
        stored_serial = int(stored["serial"])
        stored_lineage = str(stored["lineage"])
        if not lineage:
            raise StaleStateError(
                f"refusing to write a new state over {where}: it already holds state "
                f"serial {stored_serial} of lineage {stored_lineage}, and this write starts "
                "a new lineage. Read the state first and write it back changed."
            )
        if lineage != stored_lineage:
            raise StaleStateError(
                f"refusing to write state of lineage {lineage} over {where}, which holds "
                f"lineage {stored_lineage} (serial {stored_serial}): they are different "
                "states' histories (another project's state, or a re-created one)."
            )
        if serial is None or serial < stored_serial:
            raise StaleStateError(
                f"the state moved on since it was read: this write is based on serial "
                f"{serial if serial is not None else '(none)'}, but {where} is at serial "
                f"{stored_serial} (lineage {stored_lineage}). Someone else wrote meanwhile; "
                "run plan again."
            )
        new_lineage = lineage
        new_serial = max(serial, stored_serial) + 1
    return {
        "format_version": FORMAT_VERSION,
        "serial": new_serial,
        "lineage": new_lineage,
        **payload,
    }


def encode_state(doc: Mapping[str, Any], where: str) -> bytes:
    """`doc` as the UTF-8 JSON text stored; StateError when a value is not JSON."""
    try:
        text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StateError(
            f"cannot write state to {where}: a value is not plain JSON ({exc})"
        ) from None
    return (text + "\n").encode("utf-8")


def decode_state(raw: bytes, where: str, recovery: str) -> dict[str, Any]:
    """Parse stored bytes; a corrupt state is a StateError naming `where` and `recovery`."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"the state file {where} is corrupt ({exc}). {recovery}") from None
    return check_state(data, where, recovery)


def check_lock_args(operation: str, timeout_seconds: float) -> None:
    """ConfigError for an empty operation or a negative/NaN timeout."""
    if not operation:
        raise ConfigError("a state lock needs an operation name (plan, apply, destroy...)")
    if math.isnan(timeout_seconds) or timeout_seconds < 0:
        raise ConfigError(f"the lock timeout must be 0 or more seconds, got {timeout_seconds}")


def poll_delays(timeout_seconds: float) -> Iterator[float]:
    """Waits between attempts to take a busy lock, with backoff, summing to the timeout.

    Yields nothing when `timeout_seconds` is 0; the caller tries once before each wait.
    """
    deadline = time.monotonic() + timeout_seconds
    delay = POLL_FIRST
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        yield min(delay, left)
        delay = min(delay * POLL_FACTOR, POLL_MAX)


def poll(attempt: Callable[[], T | None], timeout_seconds: float) -> T | None:
    """`attempt()` until it gives a value, waiting `poll_delays` between tries (a first try
    at once); None when `timeout_seconds` passed without one."""
    result = attempt()
    if result is not None:
        return result
    for delay in poll_delays(timeout_seconds):
        time.sleep(delay)
        result = attempt()
        if result is not None:
            return result
    return None


def lock_with_retry(
    operation: str,
    timeout_seconds: float,
    held: HeldLock[K] | None,
    where: str,
    attempt: Callable[[], AbstractContextManager[LockAttempt[K]]],
) -> HeldLock[K]:
    """Take a backend's lock for `operation`, waiting up to `timeout_seconds`.

    Checks the arguments (ConfigError), refuses when this process already holds the lock
    (`held`; StateError naming `where`), then enters `attempt()` (which may prepare: create
    the folder, connect) and polls its `try_take` until the timeout: StateLockedError naming
    the holder when the lock stayed busy, else the holder record `claim` wrote.
    """
    check_lock_args(operation, timeout_seconds)
    if held is not None:
        raise StateError(
            f"this process already holds the lock on {where} "
            f"({held.info.id}, for {held.info.operation})"
        )
    with attempt() as lock:
        keeper = poll(lock.try_take, timeout_seconds)
        waited = timeout_seconds
        holder = lock.holder() if keeper is None else None
        if holder is not None and holder.operation == RUNTIME_OPERATION:
            # The runtime holds the lock only while it replaces or scales: a command waits
            # for it, whatever its --lock-timeout, instead of failing on a routine action.
            log.info("the runtime holds the state lock (%s): waiting for it", holder.id)
            keeper = poll(lock.try_take, RUNTIME_LOCK_WAIT_SECONDS)
            waited += RUNTIME_LOCK_WAIT_SECONDS
        if keeper is None:
            raise locked_error(lock.holder(), lock.where, waited)
        return HeldLock(lock.claim(keeper, operation), keeper)


def check_held(
    held: HeldLock[K] | None,
    lock_id: str,
    where: str,
    current: Callable[[], LockInfo | None],
) -> HeldLock[K]:
    """`held` when it is the lock `lock_id`, else the StateError of an `unlock` of a lock
    this process does not hold (`current()` says who holds the state now)."""
    if held is not None and held.info.id == lock_id:
        return held
    now_holder = current()
    now = (
        f"the state is locked as {now_holder.id} by {now_holder.who} (pid {now_holder.pid})"
        if now_holder is not None
        else "the state is not locked"
    )
    raise StateError(
        f"cannot unlock {where}: lock {lock_id} is not held by this process ({now}). "
        f"To remove another run's lock use: declare force-unlock <ID>"
    )


def wrong_lock_error(
    where: str, lock_id: str, current_id: str, current: LockInfo | None
) -> StateError:
    """The StateError of a force-unlock of `lock_id` when the state is locked as `current_id`
    (`current`: its record, None when unreadable)."""
    detail = f"\nLock info:\n{current.describe()}" if current is not None else ""
    return StateError(
        f"cannot unlock {where}: it is locked as {current_id}, not {lock_id}.{detail}"
    )


def warn_takeover(where: str, replaced: LockInfo | None) -> None:
    """Log that the lock on `where` left by a dead run (`replaced`; None: unreadable) was
    taken over."""
    log.warning(
        "took over the lock on %s left by a run that is gone: %s",
        where,
        f"{replaced.id} ({replaced.operation} by {replaced.who}, pid {replaced.pid}, "
        f"since {replaced.created})"
        if replaced is not None
        else "its record was unreadable",
    )


def locked_error(holder: LockInfo | None, where: str, waited: float) -> StateLockedError:
    """The StateLockedError for a lock still busy after `waited` seconds."""
    waited_text = f"waited {waited:g} s" if waited > 0 else "lock timeout 0: did not wait"
    if holder is None:
        body = "  (the holder is still writing its lock record; try again, or raise --lock-timeout)"
        hint = ""
    else:
        body = holder.describe()
        hint = (
            f"\nIf that run is gone and the lock was not freed, remove it with:\n"
            f"  declare force-unlock {holder.id}"
        )
    return StateLockedError(
        f"the state at {where} is locked by another run ({waited_text}).\nLock info:\n{body}{hint}"
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (containers)
        return f"uid{os.getuid()}"
