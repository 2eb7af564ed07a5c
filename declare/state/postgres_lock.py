"""The PostgreSQL state backend's lock: a session advisory lock on a connection of its own,
and the holder's row in the lock table.

The holder keeps a session-level advisory lock (`pg_try_advisory_lock` on the workspace's
key) on its lock session for as long as it holds the state lock, and records its LockInfo
in the lock table. The lock session turns the server's TCP keepalives on and its idle
timeouts off (`LOCK_SESSION_SETTINGS`). When the holder dies the server ends its session and
releases the advisory lock; a lock row whose advisory lock nobody holds is a dead run's, and
`record` replaces it and says so (`LockInfo.replaced`, a warning on `declare.state`).

force-unlock(ID), with the lock row locked (FOR UPDATE), checks the ID, ends the session
holding the advisory lock (`pg_terminate_backend`), deletes the row, and waits until the
server has released the advisory lock.

Does: open the lock session (`session`, the `LockAttempt` that `lock_with_retry` drives),
take the advisory lock without waiting, record, release and force-unlock. Does not: wait
for a busy lock (`lock_with_retry` polls), remember which lock this process holds (the
backend keeps the `HeldLock`), create the tables, or read or write the state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from declare.errors import StateError
from declare.state.backend import LockInfo, poll, warn_takeover, wrong_lock_error
from declare.state.postgres_connect import Connection, reason
from declare.state.postgres_sql import (
    StateTables,
    advisory_holders,
    advisory_unlock,
    set_config,
    terminate_backend,
    try_advisory_lock,
)

# How long force-unlock waits for the server to end the holder's session.
TERMINATE_TIMEOUT_SECONDS = 10.0
# Server-side settings of the lock's session (see the module docstring).
LOCK_SESSION_SETTINGS = (
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
    ("idle_session_timeout", "0"),  # PostgreSQL 14+; ignored where unknown
    ("idle_in_transaction_session_timeout", "0"),
)

log = logging.getLogger("declare.state")


@dataclass(frozen=True)
class WorkspaceLock:
    """The state lock of one workspace (`tables`); `where` names the state in messages.

    Holds no state of its own: each method works on the connection it is given.
    """

    tables: StateTables
    where: str

    @contextmanager
    def session(self, connect: Callable[[str], Connection]) -> Iterator[LockSession]:
        """A new lock session, closed again when taking the lock fails (database errors
        become StateError); on success it stays open, the lock's keeper."""
        conn = connect("lock")
        try:
            for name, value in LOCK_SESSION_SETTINGS:
                _set_if_known(conn, name, value)
            yield LockSession(self, conn)
        except psycopg.Error as exc:
            conn.close()
            raise StateError(f"cannot lock the state at {self.where}: {reason(exc)}") from None
        except BaseException:
            conn.close()
            raise

    def holder(self, conn: Connection) -> LockInfo | None:
        """The recorded holder; None when unlocked or the row is not declare's."""
        text = self.tables.lock_record(conn)
        return None if text is None else self._parse(text)

    def record(self, conn: Connection, operation: str) -> LockInfo:
        """Record this run as the holder; called holding the advisory lock, so any row
        there is a dead run's (or one force-unlock is removing)."""
        with conn.transaction():
            text = self.tables.lock_record(conn, for_update=True)
            replaced = None
            if text is not None:
                replaced = self._parse(text)
                warn_takeover(self.where, replaced)
            info = LockInfo.new(operation, replaced)
            self.tables.upsert_lock(conn, info.id, json.dumps(info.to_json()))
        return info

    def release(self, conn: Connection, lock_id: str) -> None:
        """Delete the row of `lock_id` (a new holder's row stays), free the advisory lock,
        close the lock session `conn`. Never raises for a session that ended already."""
        try:
            with conn.transaction():
                deleted = self.tables.delete_lock(conn, lock_id)
            advisory_unlock(conn, self.tables.lock_key)
            if not deleted:
                log.warning(
                    "the lock %s on %s was removed (force-unlock) while this run held it",
                    lock_id,
                    self.where,
                )
        except psycopg.Error as exc:
            # The session ended (force-unlock, a server restart, the network): the server
            # released the advisory lock with it, and a new holder's row stays.
            log.warning(
                "the lock %s on %s was already released: its database session ended "
                "(force-unlock, a server restart or a network failure): %s",
                lock_id,
                self.where,
                reason(exc),
            )
        finally:
            conn.close()

    def force_unlock(self, conn: Connection, lock_id: str) -> None:
        """Remove the lock `lock_id` whoever holds it, ending the holder's session."""
        try:
            holder = self._end_holder_session(conn, lock_id)
            if holder is not None:
                self._await_release(conn, holder)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StateError(
                f"cannot unlock {self.where}: ending the holder's database session "
                f"was refused ({reason(exc)}). force-unlock of a run that is still "
                "connected needs the holder's database role or membership in "
                "pg_signal_backend."
            ) from None
        except psycopg.errors.UndefinedTable:
            raise StateError(f"cannot unlock {self.where}: it is not locked") from None
        except psycopg.Error as exc:
            raise StateError(f"cannot unlock {self.where}: {reason(exc)}") from None

    def _parse(self, text: str) -> LockInfo | None:
        try:
            return LockInfo.from_json(json.loads(text), f"{self.where} lock")
        except (ValueError, StateError):
            return None  # not written by declare: treated as an unreadable record

    def _end_holder_session(self, conn: Connection, lock_id: str) -> int | None:
        """Check the ID, end the holder's session, delete the row; the ended session's PID."""
        with conn.transaction():
            row = self.tables.lock_row_for_update(conn)
            if row is None:
                raise StateError(f"cannot unlock {self.where}: it is not locked")
            current_id, info_text, backend_pid = row
            if current_id != lock_id:
                raise wrong_lock_error(self.where, lock_id, current_id, self._parse(info_text))
            ended = None
            for pid in advisory_holders(conn, self.tables.lock_key):
                if pid != backend_pid:
                    raise StateError(
                        f"cannot unlock {self.where}: the lock {lock_id} is being taken "
                        "over by another run right now; see it with `declare plan` and try "
                        "again if it is still stuck"
                    )
                if not terminate_backend(conn, pid):
                    raise StateError(
                        f"cannot unlock {self.where}: the server did not end the "
                        f"holder's session (backend pid {pid})"
                    )
                ended = pid
            self.tables.delete_lock(conn, lock_id)
        return ended

    def _await_release(self, conn: Connection, pid: int) -> None:
        """Wait until the ended session `pid` no longer holds the advisory lock."""
        key = self.tables.lock_key
        if poll(
            lambda: (pid not in advisory_holders(conn, key)) or None, TERMINATE_TIMEOUT_SECONDS
        ):
            return
        raise StateError(
            f"force-unlock of {self.where}: the holder's session (backend pid {pid}) "
            f"was told to end but still holds the lock after "
            f"{TERMINATE_TIMEOUT_SECONDS:g} s; try again"
        )


@dataclass(frozen=True)
class LockSession:
    """The connection `conn` on which one run tries `lock`: the `LockAttempt` that
    `lock_with_retry` drives; the keeper of a lock taken is `conn` itself."""

    lock: WorkspaceLock
    conn: Connection

    @property
    def where(self) -> str:
        return self.lock.where

    def try_take(self) -> Connection | None:
        return self.conn if try_advisory_lock(self.conn, self.lock.tables.lock_key) else None

    def holder(self) -> LockInfo | None:
        return self.lock.holder(self.conn)

    def claim(self, keeper: Connection, operation: str) -> LockInfo:
        return self.lock.record(keeper, operation)


def _set_if_known(conn: Connection, name: str, value: str) -> None:
    """`SET name = value` for this session; a setting this server does not have is skipped."""
    try:
        set_config(conn, name, value)
    except psycopg.errors.UndefinedObject:
        log.debug("the state database has no setting %s", name)
