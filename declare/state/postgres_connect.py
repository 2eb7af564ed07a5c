"""Connections to the PostgreSQL state database (`declare.state.postgres`).

Does: check a libpq connection string and name where it points without its secrets (for
messages), open an autocommit connection with a connect timeout and an application name,
and word a database error on one line. Does not: keep connections, run the backend's
statements (`postgres_sql`), or know about the lock (`postgres_lock`). Nothing here ever
puts the DSN, which may hold a password, into a message.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from declare.errors import ConfigError, StateError

CONNECT_TIMEOUT_SECONDS = 10

Connection = psycopg.Connection[tuple[Any, ...]]


def location_of(dsn: str, dsn_source: str, schema: str, table: str, workspace: str) -> str:
    """Where the state lives, for messages: `postgres://host:port/db (table ..., workspace ...)`.

    ConfigError naming `dsn_source` (never the DSN) when `dsn` is not a connection string.
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ConfigError(
            f"{dsn_source} is not a PostgreSQL connection string "
            "(postgresql://user:password@host:port/database, or key=value pairs)"
        ) from None
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    database = params.get("dbname") or params.get("user") or ""
    return f"postgres://{host}{port}/{database} (table {schema}.{table}, workspace {workspace})"


def connect(dsn: str, purpose: str, where: str) -> Connection:
    """A new autocommit connection for `purpose`; StateError naming `where` when it fails."""
    try:
        return psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=f"declare state {purpose}",
        )
    except psycopg.Error as exc:
        raise StateError(f"cannot connect to the state database {where}: {reason(exc)}") from None


def reason(exc: psycopg.Error) -> str:
    """The server's or libpq's message, on one line (it never holds the password)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
