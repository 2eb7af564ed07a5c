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
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from declare.errors import ConfigError, StateError
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

DEFAULT_SCHEMA = "public"
DEFAULT_TABLE = "declare_state"
CONNECT_TIMEOUT_SECONDS = 10
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

Connection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class _Held:
    info: LockInfo
    conn: Connection


class PostgresStateBackend(StateBackend):
    """The state of `workspace` in a PostgreSQL database; see the module docstring.

    `dsn` is a libpq connection string (URI or key=value). `dsn_source` says where it came
    from, for messages ("environment variable DECLARE_STATE_DSN"); the DSN itself, which
    may hold a password, is never shown.
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
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            raise ConfigError(
                f"{dsn_source} is not a PostgreSQL connection string "
                "(postgresql://user:password@host:port/database, or key=value pairs)"
            ) from None
        self._dsn = dsn
        self.workspace = workspace
        self.schema = schema
        self.table = table
        host = str(params.get("host") or params.get("hostaddr") or "localhost")
        port = f":{params['port']}" if params.get("port") else ""
        database = params.get("dbname") or params.get("user") or ""
        self._location = (
            f"postgres://{host}{port}/{database} (table {schema}.{table}, workspace {workspace})"
        )
        self._history = sql.Identifier(schema, table)
        self._locks = sql.Identifier(schema, f"{table}_lock")
        self._lock_key = _advisory_key("lock", schema, table, workspace)
        self._write_key = _advisory_key("write", schema, table, workspace)
        self._setup_key = _advisory_key("setup", schema, table)
        self._tables_ready = False
        self._held: _Held | None = None
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
                row = conn.execute(
                    sql.SQL(
                        "SELECT id, doc::text FROM {} WHERE workspace = %s ORDER BY id DESC LIMIT 1"
                    ).format(self._history),
                    (self.workspace,),
                ).fetchone()
            except psycopg.errors.UndefinedTable:
                return None
        if row is None:
            return None
        return self._decode(row[0], row[1])

    def write(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        self._ensure_tables()
        with self._session("write") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_key,))
            row = conn.execute(
                sql.SQL(
                    "SELECT id, doc::text FROM {} WHERE workspace = %s ORDER BY id DESC LIMIT 1"
                ).format(self._history),
                (self.workspace,),
            ).fetchone()
            stored = None if row is None else self._decode(row[0], row[1])
            new = next_state(stored, doc, self._location)
            text = encode_state(new, self._location).decode("utf-8")
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (workspace, serial, lineage, doc) VALUES (%s, %s, %s, %s::json)"
                ).format(self._history),
                (self.workspace, new["serial"], new["lineage"], text),
            )
        result: dict[str, Any] = json.loads(text)
        return result

    # ---- lock ------------------------------------------------------------------------

    def lock(self, operation: str, timeout_seconds: float) -> LockInfo:
        check_lock_args(operation, timeout_seconds)
        if self._held is not None:
            raise StateError(
                f"this process already holds the lock on {self._location} "
                f"({self._held.info.id}, for {self._held.info.operation})"
            )
        self._ensure_tables()
        conn = self._connect("lock")
        try:
            for name, value in LOCK_SESSION_SETTINGS:
                _set_if_known(conn, name, value)
            got = self._try_advisory_lock(conn)
            if not got:
                for delay in poll_delays(timeout_seconds):
                    time.sleep(delay)
                    if self._try_advisory_lock(conn):
                        got = True
                        break
            if not got:
                raise locked_error(self._lock_row(conn), self._location, timeout_seconds)
            info = self._write_lock_row(conn, operation)
        except psycopg.Error as exc:
            conn.close()
            raise StateError(f"cannot lock the state at {self._location}: {_reason(exc)}") from None
        except BaseException:
            conn.close()
            raise
        self._held = _Held(info, conn)
        return info

    def unlock(self, lock_id: str) -> None:
        held = self._held
        if held is None or held.info.id != lock_id:
            current = self.lock_info()
            now = (
                f"the state is locked as {current.id} by {current.who} (pid {current.pid})"
                if current is not None
                else "the state is not locked"
            )
            raise StateError(
                f"cannot unlock {self._location}: lock {lock_id} is not held by this process "
                f"({now}). To remove another run's lock use: declare force-unlock <ID>"
            )
        with self._mutex:
            self._held = None
            try:
                with held.conn.transaction():
                    deleted = held.conn.execute(
                        sql.SQL("DELETE FROM {} WHERE workspace = %s AND lock_id = %s").format(
                            self._locks
                        ),
                        (self.workspace, lock_id),
                    ).rowcount
                held.conn.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key,))
                if not deleted:
                    log.warning(
                        "the lock %s on %s was removed (force-unlock) while this run held it",
                        lock_id,
                        self._location,
                    )
            except psycopg.Error as exc:
                # The session ended (force-unlock, a server restart, the network): the server
                # released the advisory lock with it, and a new holder's row stays.
                log.warning(
                    "the lock %s on %s was already released: its database session ended "
                    "(force-unlock, a server restart or a network failure): %s",
                    lock_id,
                    self._location,
                    _reason(exc),
                )
            finally:
                held.conn.close()

    def force_unlock(self, lock_id: str) -> None:
        if self._held is not None and self._held.info.id == lock_id:
            self.unlock(lock_id)
            return
        with self._connect("force-unlock") as conn:
            try:
                holder = self._end_holder_session(conn, lock_id)
                if holder is not None:
                    self._await_release(conn, holder)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise StateError(
                    f"cannot unlock {self._location}: ending the holder's database session "
                    f"was refused ({_reason(exc)}). force-unlock of a run that is still "
                    "connected needs the holder's database role or membership in "
                    "pg_signal_backend."
                ) from None
            except psycopg.errors.UndefinedTable:
                raise StateError(f"cannot unlock {self._location}: it is not locked") from None
            except psycopg.Error as exc:
                raise StateError(f"cannot unlock {self._location}: {_reason(exc)}") from None

    def lock_info(self) -> LockInfo | None:
        with self._session("lock info") as conn:
            try:
                return self._lock_row(conn)
            except psycopg.errors.UndefinedTable:
                return None

    # ---- internals -------------------------------------------------------------------

    def _connect(self, purpose: str) -> Connection:
        try:
            return psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name=f"declare state {purpose}",
            )
        except psycopg.Error as exc:
            raise StateError(
                f"cannot connect to the state database {self._location}: {_reason(exc)}"
            ) from None

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
                    yield held.conn
                else:
                    with self._connect(purpose) as conn:
                        yield conn
            except psycopg.errors.UndefinedTable:
                raise
            except psycopg.OperationalError as exc:
                if held is not None and (held.conn.broken or held.conn.closed):
                    raise StateError(
                        f"the state lock {held.info.id} on {self._location} was lost: its "
                        "database session ended (force-unlock, a server restart or a network "
                        f"failure), so this {purpose} was not done ({_reason(exc)}). "
                        "Run plan again."
                    ) from None
                raise StateError(
                    f"cannot {purpose} the state at {self._location}: {_reason(exc)}"
                ) from None
            except psycopg.Error as exc:
                raise StateError(
                    f"cannot {purpose} the state at {self._location}: {_reason(exc)}"
                ) from None

    def _ensure_tables(self) -> None:
        """Create the schema and tables when missing (once per instance)."""
        if self._tables_ready:
            return
        with self._session("prepare") as conn:
            if not self._tables_exist(conn):
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._setup_key,))
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
                    conn.execute(
                        sql.SQL(
                            """
                            CREATE TABLE IF NOT EXISTS {history} (
                                id bigserial PRIMARY KEY,
                                workspace text NOT NULL,
                                serial bigint NOT NULL,
                                lineage text NOT NULL,
                                doc json NOT NULL,
                                written_at timestamptz NOT NULL DEFAULT now(),
                                UNIQUE (workspace, lineage, serial)
                            )
                            """
                        ).format(history=self._history)
                    )
                    conn.execute(
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (workspace, id)").format(
                            sql.Identifier(f"{self.table}_latest"), self._history
                        )
                    )
                    conn.execute(
                        sql.SQL(
                            """
                            CREATE TABLE IF NOT EXISTS {locks} (
                                workspace text PRIMARY KEY,
                                lock_id text NOT NULL,
                                info json NOT NULL,
                                backend_pid integer NOT NULL,
                                locked_at timestamptz NOT NULL DEFAULT now()
                            )
                            """
                        ).format(locks=self._locks)
                    )
        self._tables_ready = True

    def _tables_exist(self, conn: Connection) -> bool:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
            (
                self._history.as_string(conn),
                self._locks.as_string(conn),
            ),
        ).fetchone()
        return bool(row and row[0])

    def _decode(self, row_id: int, text: str) -> dict[str, Any]:
        return decode_state(text.encode("utf-8"), self._location, self._recovery_hint(row_id))

    def _recovery_hint(self, row_id: int) -> str:
        return (
            f"Every earlier state is kept in {self.schema}.{self.table}: find a good one with "
            f"SELECT id, serial, written_at FROM {self.schema}.{self.table} WHERE workspace = "
            f"'{self.workspace}' AND id < {row_id} ORDER BY id DESC, then write it to a file "
            "and `declare state push --force` it."
        )

    def _try_advisory_lock(self, conn: Connection) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,)).fetchone()
        return bool(row and row[0])

    def _lock_row(self, conn: Connection) -> LockInfo | None:
        row = conn.execute(
            sql.SQL("SELECT info::text FROM {} WHERE workspace = %s").format(self._locks),
            (self.workspace,),
        ).fetchone()
        return None if row is None else self._parse_lock(row[0])

    def _parse_lock(self, text: str) -> LockInfo | None:
        try:
            return LockInfo.from_json(json.loads(text), f"{self._location} lock")
        except (ValueError, StateError):
            return None  # not written by declare: treated as an unreadable record

    def _write_lock_row(self, conn: Connection, operation: str) -> LockInfo:
        """Record this run as the holder; called holding the advisory lock, so any row
        there is a dead run's (or one force-unlock is removing)."""
        with conn.transaction():
            row = conn.execute(
                sql.SQL("SELECT info::text FROM {} WHERE workspace = %s FOR UPDATE").format(
                    self._locks
                ),
                (self.workspace,),
            ).fetchone()
            replaced = None
            if row is not None:
                replaced = self._parse_lock(row[0])
                log.warning(
                    "took over the lock on %s left by a run that is gone: %s",
                    self._location,
                    f"{replaced.id} ({replaced.operation} by {replaced.who}, pid "
                    f"{replaced.pid}, since {replaced.created})"
                    if replaced is not None
                    else "its record was unreadable",
                )
            info = LockInfo.new(operation, replaced)
            conn.execute(
                sql.SQL(
                    """
                    INSERT INTO {} (workspace, lock_id, info, backend_pid)
                    VALUES (%s, %s, %s::json, pg_backend_pid())
                    ON CONFLICT (workspace) DO UPDATE
                    SET lock_id = excluded.lock_id, info = excluded.info,
                        backend_pid = excluded.backend_pid, locked_at = now()
                    """
                ).format(self._locks),
                (self.workspace, info.id, json.dumps(info.to_json())),
            )
        return info

    def _advisory_holders(self, conn: Connection) -> list[int]:
        """Backend PIDs of the sessions holding this workspace's advisory lock (0 or 1)."""
        unsigned = self._lock_key & 0xFFFF_FFFF_FFFF_FFFF
        rows = conn.execute(
            """
            SELECT pid FROM pg_locks
            WHERE locktype = 'advisory' AND granted
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1
            """,
            (unsigned >> 32, unsigned & 0xFFFF_FFFF),
        ).fetchall()
        return [int(pid) for (pid,) in rows if pid is not None]

    def _end_holder_session(self, conn: Connection, lock_id: str) -> int | None:
        """Check the ID, end the holder's session, delete the row; the ended session's PID."""
        with conn.transaction():
            row = conn.execute(
                sql.SQL(
                    "SELECT lock_id, info::text, backend_pid FROM {} WHERE workspace = %s "
                    "FOR UPDATE"
                ).format(self._locks),
                (self.workspace,),
            ).fetchone()
            if row is None:
                raise StateError(f"cannot unlock {self._location}: it is not locked")
            current_id, info_text, backend_pid = row
            if current_id != lock_id:
                current = self._parse_lock(info_text)
                detail = f"\nLock info:\n{current.describe()}" if current is not None else ""
                raise StateError(
                    f"cannot unlock {self._location}: it is locked as {current_id}, "
                    f"not {lock_id}.{detail}"
                )
            ended = None
            for pid in self._advisory_holders(conn):
                if pid != backend_pid:
                    raise StateError(
                        f"cannot unlock {self._location}: the lock {lock_id} is being taken "
                        "over by another run right now; see it with `declare plan` and try "
                        "again if it is still stuck"
                    )
                done = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
                if not (done and done[0]):
                    raise StateError(
                        f"cannot unlock {self._location}: the server did not end the "
                        f"holder's session (backend pid {pid})"
                    )
                ended = pid
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE workspace = %s AND lock_id = %s").format(self._locks),
                (self.workspace, lock_id),
            )
        return ended

    def _await_release(self, conn: Connection, pid: int) -> None:
        """Wait until the ended session `pid` no longer holds the advisory lock."""
        for delay in poll_delays(TERMINATE_TIMEOUT_SECONDS):
            if pid not in self._advisory_holders(conn):
                return
            time.sleep(delay)
        if pid in self._advisory_holders(conn):
            raise StateError(
                f"force-unlock of {self._location}: the holder's session (backend pid {pid}) "
                f"was told to end but still holds the lock after "
                f"{TERMINATE_TIMEOUT_SECONDS:g} s; try again"
            )


def _advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for `parts` (same on every client)."""
    digest = hashlib.sha256("\0".join(("declare-state", *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _set_if_known(conn: Connection, name: str, value: str) -> None:
    """`SET name = value` for this session; a setting this server does not have is skipped."""
    try:
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    except psycopg.errors.UndefinedObject:
        log.debug("the state database has no setting %s", name)


def _reason(exc: psycopg.Error) -> str:
    """The server's or libpq's message, on one line (it never holds the password)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
