"""Which state backend a project uses: declare.yaml `state.backend`, opened.

    local      (default) `LocalStateBackend(<state.path>)`
    postgres   `PostgresStateBackend` on the connection string in the environment variable
               that `state.dsn_env` names; the workspace is `state.workspace`, else the
               project name. psycopg is imported only for this backend.

Reads the environment; opens no connection (the backend connects on first use).
"""

from __future__ import annotations

from collections.abc import Mapping

from declare.config import ProjectConfig
from declare.errors import ConfigError
from declare.state.backend import StateBackend
from declare.state.local import LocalStateBackend


def open_backend(config: ProjectConfig, environ: Mapping[str, str]) -> StateBackend:
    """The state backend `config` selects; ConfigError when its settings cannot work."""
    settings = config.state_backend
    if settings.backend == "local":
        return LocalStateBackend(config.state_dir)
    if settings.backend == "postgres":
        where = config.config_file.name if config.config_file else "declare.yaml"
        env = settings.dsn_env
        if not env:
            raise ConfigError(f"{where}: state.backend postgres needs state.dsn_env")
        dsn = environ.get(env, "")
        if not dsn.strip():
            raise ConfigError(
                f"{where}: state.dsn_env names {env}, but that environment variable is not "
                "set or empty; set it to the PostgreSQL connection string "
                "(postgresql://user:password@host:port/database)"
            )
        from declare.state.postgres import PostgresStateBackend

        return PostgresStateBackend(
            dsn,
            workspace=settings.workspace or config.project_name,
            schema=settings.schema,
            table=settings.table,
            dsn_source=f"the environment variable {env} (state.dsn_env)",
        )
    raise ConfigError(f"unknown state backend {settings.backend!r}; use local or postgres")
