"""The PostgreSQL state backend: one state per workspace in a shared database, for CI.

Selected in declare.yaml (`state.backend: postgres`, `state.dsn_env` names the environment
variable holding the connection string: credentials never sit in declare.yaml). Two tables
in `schema` (default `public`), created on the first write or lock when missing (a role
that may not create them can use tables made beforehand):

    <table>        (default declare_state) the history, append-only: one row per write,
                   (id bigserial, workspace, serial, lineage, doc json, written_at).
                   A workspace's state is its row with the highest id. Rows are never
                   updated or deleted, so every earlier state stays readable:
                   SELECT doc FROM <table> WHERE workspace = '...' ORDER BY id DESC
    <table>_lock   one row per locked workspace: (workspace, lock_id, info json, backend_pid,
                   locked_at): who holds the lock, for messages and force-unlock.

Writes. One transaction takes a transaction-level advisory lock on the workspace (the
write mutex: released at commit, rollback, or when the session dies), reads the latest
row, applies `next_state` (serial + 1, lineage kept; StaleStateError when the document
would lose another write) and inserts the new row. Concurrent writers serialize, whether
they hold the state lock or not; a UNIQUE (workspace, lineage, serial) backs that up.
The document is stored as `json` (its text verbatim, so key order survives).

The lock. The holder keeps a *session-level* advisory lock (`pg_try_advisory_lock`, a key
derived from schema, table and workspace) on a connection of its own for as long as it
holds the state lock, and writes its LockInfo into the lock table. When the holder's
process dies its connection closes and the server ends the session, which releases the
advisory lock: a crashed CI job cannot keep the lock. For a holder that vanishes without
closing its connection (a machine powered off, a network cut), the lock session turns on
the server's TCP keepalives (30 s idle, 10 s interval, 3 probes: about a minute), and sets
`idle_session_timeout` off so an idle lock is not dropped while its holder works. A lock
row whose advisory lock nobody holds is a dead run's: the next locker, once it has the
advisory lock, replaces it and says so (`LockInfo.replaced`, a warning on the
`declare.state` logger). A waiting locker polls `pg_try_advisory_lock` with `poll_delays`.
While the lock is held, reads and writes go through the lock's own session, so a run
whose lock session has ended (see force-unlock) cannot write any more.

force-unlock(ID). With the lock row locked (FOR UPDATE), it checks the ID, finds the
session that holds the advisory lock in `pg_locks`, ends it with `pg_terminate_backend`
(the holder's process lives on, but its lock session, and so its right to write, is
gone), deletes the row, and waits until the server has released the advisory lock.
Ending another session needs the holder's database role (or membership in
pg_signal_backend): CI jobs sharing one role qualify. As in Terraform it is for runs that
are gone or stuck; the stuck run's next write fails, and its late `unlock` leaves a new
holder's lock alone.

Needs a direct session to the server, or a pooler in session mode: a transaction-mode
pooler (PgBouncer `pool_mode=transaction`) cannot keep session advisory locks. Tested
against PostgreSQL 15; uses nothing newer than PostgreSQL 12. Knows nothing of what the
document means (see `declare.state.document`).

This module does reading, the write transaction, and the bookkeeping of the lock this
process holds (and which connection a read or write goes through). The statements are
`postgres_sql`'s, the lock session and force-unlock `postgres_lock`'s, connecting
`postgres_connect`'s, the waiting `backend.lock_with_retry`'s.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from declare.errors import ConfigError, StateError
from declare.state.backend import (
    HeldLock,
    LockInfo,
    StateBackend,
    check_held,
    decode_state,
    encode_state,
    lock_with_retry,
    next_state,
)
from declare.state.postgres_connect import (
    CONNECT_TIMEOUT_SECONDS,
    Connection,
    connect,
    location_of,
    reason,
)
from declare.state.postgres_lock import (
    LOCK_SESSION_SETTINGS,
    TERMINATE_TIMEOUT_SECONDS,
    LockSession,
    WorkspaceLock,
)
from declare.state.postgres_sql import StateTables, advisory_xact_lock

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_SCHEMA",
    "DEFAULT_TABLE",
    "LOCK_SESSION_SETTINGS",
    "TERMINATE_TIMEOUT_SECONDS",
    "Connection",
    "PostgresStateBackend",
]

DEFAULT_SCHEMA = "public"
DEFAULT_TABLE = "declare_state"


class PostgresStateBackend(StateBackend):
    """The state of `workspace` in a PostgreSQL database; see the module docstring.

    `dsn` is a libpq connection string (URI or key=value). `dsn_source` says where it came
    from, for messages ("environment variable DECLARE_STATE_DSN"); the DSN itself, which
    may hold a password, is never shown. Holds whether the tables were seen, and the lock
    this instance took (`_held`: its record and its lock session) until it is unlocked.
    """

    def __init__(
        self,
        dsn: str,
        workspace: str,
        schema: str = DEFAULT_SCHEMA,
        table: str = DEFAULT_TABLE,
        dsn_source: str = "the connection string",
    ) -> None:
        if not workspace:
            raise ConfigError("the PostgreSQL state backend needs a workspace name")
        self._location = location_of(dsn, dsn_source, schema, table, workspace)
        self._dsn = dsn
        self.workspace = workspace
        self.schema = schema
        self.table = table
        self._tables = StateTables(schema, table, workspace)
        self._lock = WorkspaceLock(self._tables, self._location)
        self._tables_ready = False
        self._held: HeldLock[Connection] | None = None
        self._mutex = threading.RLock()  # one user of the lock's connection at a time

    def __repr__(self) -> str:
        return f"PostgresStateBackend({self._location!r})"

    @property
    def location(self) -> str:
        return self._location

    # ---- read / write ----------------------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        with self._session("read") as conn:
            try:
                row = self._tables.latest_state(conn)
            except psycopg.errors.UndefinedTable:
                return None
        return None if row is None else self._decode(*row)

    def write(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        self._ensure_tables()
        with self._session("write") as conn, conn.transaction():
            advisory_xact_lock(conn, self._tables.write_key)
            row = self._tables.latest_state(conn)
            stored = None if row is None else self._decode(*row)
            new = next_state(stored, doc, self._location)
            text = encode_state(new, self._location).decode("utf-8")
            self._tables.insert_state(conn, new["serial"], new["lineage"], text)
        result: dict[str, Any] = json.loads(text)
        return result

    # ---- lock ------------------------------------------------------------------------

    def lock(self, operation: str, timeout_seconds: float) -> LockInfo:
        self._held = lock_with_retry(
            operation, timeout_seconds, self._held, self._location, self._lock_attempt
        )
        return self._held.info

    def unlock(self, lock_id: str) -> None:
        held = check_held(self._held, lock_id, self._location, self.lock_info)
        with self._mutex:
            self._held = None
            self._lock.release(held.keeper, lock_id)

    def force_unlock(self, lock_id: str) -> None:
        if self._held is not None and self._held.info.id == lock_id:
            self.unlock(lock_id)
            return
        with self._connect("force-unlock") as conn:
            self._lock.force_unlock(conn, lock_id)

    def lock_info(self) -> LockInfo | None:
        with self._session("lock info") as conn:
            try:
                return self._lock.holder(conn)
            except psycopg.errors.UndefinedTable:
                return None

    # ---- internals -------------------------------------------------------------------

    def _lock_attempt(self) -> AbstractContextManager[LockSession]:
        """The tables made when missing, then a new lock session (opened on entry)."""
        self._ensure_tables()
        return self._lock.session(self._connect)

    def _connect(self, purpose: str) -> Connection:
        return connect(self._dsn, purpose, self._location)

    @contextmanager
    def _session(self, purpose: str) -> Iterator[Connection]:
        """The lock's connection while this backend holds the lock, else a new one.

        Maps database errors to StateError; UndefinedTable passes through (callers read
        it as "no state yet").
        """
        with self._mutex:
            held = self._held
            try:
                if held is not None:
                    yield held.keeper
                else:
                    with self._connect(purpose) as conn:
                        yield conn
            except psycopg.errors.UndefinedTable:
                raise
            except psycopg.Error as exc:
                if (
                    isinstance(exc, psycopg.OperationalError)
                    and held is not None
                    and (held.keeper.broken or held.keeper.closed)
                ):
                    raise StateError(
                        f"the state lock {held.info.id} on {self._location} was lost: its "
                        "database session ended (force-unlock, a server restart or a network "
                        f"failure), so this {purpose} was not done ({reason(exc)}). "
                        "Run plan again."
                    ) from None
                raise StateError(
                    f"cannot {purpose} the state at {self._location}: {reason(exc)}"
                ) from None

    def _ensure_tables(self) -> None:
        """Create the schema and tables when missing (once per instance)."""
        if self._tables_ready:
            return
        with self._session("prepare") as conn:
            if not self._tables.exist(conn):
                self._tables.create(conn)
        self._tables_ready = True

    def _decode(self, row_id: int, text: str) -> dict[str, Any]:
        return decode_state(text.encode("utf-8"), self._location, self._recovery_hint(row_id))

    def _recovery_hint(self, row_id: int) -> str:
        return (
            f"Every earlier state is kept in {self.schema}.{self.table}: find a good one with "
            f"SELECT id, serial, written_at FROM {self.schema}.{self.table} WHERE workspace = "
            f"'{self.workspace}' AND id < {row_id} ORDER BY id DESC, then write it to a file "
            "and `declare state push --force` it."
        )
