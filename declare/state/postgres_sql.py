"""The SQL of the PostgreSQL state backend: its two tables and every statement it sends.

    <table>        the history, append-only: one row per write (id bigserial, workspace,
                   serial, lineage, doc json, written_at); a workspace's state is its row
                   with the highest id
    <table>_lock   one row per locked workspace (workspace, lock_id, info json,
                   backend_pid, locked_at)

Does: name the tables (schema-qualified identifiers), say whether they exist, create them
under a setup advisory lock, derive the advisory lock keys, and run each query on a
connection it is given, returning plain rows. Does not: open, close or keep connections,
turn database errors into StateError, log, or decide what a row means (the serial and
lineage rules are `backend.next_state`'s, the lock rules `postgres_lock`'s).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import sql

from declare.state.postgres_connect import Connection

_CREATE_HISTORY = """
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
_CREATE_LOCKS = """
    CREATE TABLE IF NOT EXISTS {locks} (
        workspace text PRIMARY KEY,
        lock_id text NOT NULL,
        info json NOT NULL,
        backend_pid integer NOT NULL,
        locked_at timestamptz NOT NULL DEFAULT now()
    )
"""
_UPSERT_LOCK = """
    INSERT INTO {} (workspace, lock_id, info, backend_pid)
    VALUES (%s, %s, %s::json, pg_backend_pid())
    ON CONFLICT (workspace) DO UPDATE
    SET lock_id = excluded.lock_id, info = excluded.info,
        backend_pid = excluded.backend_pid, locked_at = now()
"""
_ADVISORY_HOLDERS = """
    SELECT pid FROM pg_locks
    WHERE locktype = 'advisory' AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1
"""


@dataclass(frozen=True)
class StateTables:
    """The tables `table` and `table`_lock in `schema`, and the statements about the rows
    of `workspace` in them."""

    schema: str
    table: str
    workspace: str

    @property
    def history(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    @property
    def locks(self) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.table}_lock")

    @property
    def lock_key(self) -> int:
        """The session advisory lock whose holder holds the workspace's state lock."""
        return advisory_key("lock", self.schema, self.table, self.workspace)

    @property
    def write_key(self) -> int:
        """The transaction advisory lock of one write (the write mutex)."""
        return advisory_key("write", self.schema, self.table, self.workspace)

    @property
    def setup_key(self) -> int:
        """The transaction advisory lock of creating the tables."""
        return advisory_key("setup", self.schema, self.table)

    # ---- the tables ------------------------------------------------------------------

    def exist(self, conn: Connection) -> bool:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
            (self.history.as_string(conn), self.locks.as_string(conn)),
        ).fetchone()
        return bool(row and row[0])

    def create(self, conn: Connection) -> None:
        """Create the schema, the tables and the history's index where missing, in one
        transaction under the setup advisory lock."""
        with conn.transaction():
            advisory_xact_lock(conn, self.setup_key)
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            conn.execute(sql.SQL(_CREATE_HISTORY).format(history=self.history))
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (workspace, id)").format(
                    sql.Identifier(f"{self.table}_latest"), self.history
                )
            )
            conn.execute(sql.SQL(_CREATE_LOCKS).format(locks=self.locks))

    # ---- the history -----------------------------------------------------------------

    def latest_state(self, conn: Connection) -> tuple[int, str] | None:
        """(id, doc text) of the workspace's newest history row; None when it has none."""
        row = conn.execute(
            sql.SQL(
                "SELECT id, doc::text FROM {} WHERE workspace = %s ORDER BY id DESC LIMIT 1"
            ).format(self.history),
            (self.workspace,),
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def insert_state(self, conn: Connection, serial: int, lineage: str, text: str) -> None:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (workspace, serial, lineage, doc) VALUES (%s, %s, %s, %s::json)"
            ).format(self.history),
            (self.workspace, serial, lineage, text),
        )

    # ---- the lock row ----------------------------------------------------------------

    def lock_record(self, conn: Connection, for_update: bool = False) -> str | None:
        """The lock row's info text; `for_update` locks the row (in a transaction)."""
        query = "SELECT info::text FROM {} WHERE workspace = %s" + (
            " FOR UPDATE" if for_update else ""
        )
        row = conn.execute(sql.SQL(query).format(self.locks), (self.workspace,)).fetchone()
        return None if row is None else str(row[0])

    def lock_row_for_update(self, conn: Connection) -> tuple[str, str, int] | None:
        """(lock_id, info text, backend_pid) of the lock row, locked; None when unlocked."""
        row = conn.execute(
            sql.SQL(
                "SELECT lock_id, info::text, backend_pid FROM {} WHERE workspace = %s FOR UPDATE"
            ).format(self.locks),
            (self.workspace,),
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), int(row[2]))

    def upsert_lock(self, conn: Connection, lock_id: str, info_json: str) -> None:
        """Make this session (`pg_backend_pid()`) the recorded holder, over any old row."""
        conn.execute(sql.SQL(_UPSERT_LOCK).format(self.locks), (self.workspace, lock_id, info_json))

    def delete_lock(self, conn: Connection, lock_id: str) -> int:
        """Delete the lock row when it is `lock_id`; how many rows went (0 or 1)."""
        return conn.execute(
            sql.SQL("DELETE FROM {} WHERE workspace = %s AND lock_id = %s").format(self.locks),
            (self.workspace, lock_id),
        ).rowcount


# ---- advisory locks and sessions ---------------------------------------------------------


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for `parts` (same on every client)."""
    digest = hashlib.sha256("\0".join(("declare-state", *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def advisory_xact_lock(conn: Connection, key: int) -> None:
    """Wait for the transaction-level advisory lock `key` (released at commit or rollback)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


def try_advisory_lock(conn: Connection, key: int) -> bool:
    """Take the session-level advisory lock `key` without waiting."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


def advisory_unlock(conn: Connection, key: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def advisory_holders(conn: Connection, key: int) -> list[int]:
    """Backend PIDs of the sessions holding the session advisory lock `key` (0 or 1)."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    rows = conn.execute(_ADVISORY_HOLDERS, (unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchall()
    return [int(pid) for (pid,) in rows if pid is not None]


def terminate_backend(conn: Connection, pid: int) -> bool:
    """Ask the server to end the session `pid`; whether it agreed."""
    done = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    return bool(done and done[0])


def set_config(conn: Connection, name: str, value: str) -> None:
    """`SET name = value` for this session (UndefinedObject when the server has no `name`)."""
    conn.execute("SELECT set_config(%s, %s, false)", (name, value))
