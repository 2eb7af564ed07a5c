"""The local provider's settings (`providers.local` in declare.yaml), validated.

Parses and checks values only: nothing is started or read from disk here. Every problem is
a `ConfigError` that names the field.

    server:  the replica's scoring server (default declare): `declare` runs declare's own
             (`python -m declare.serve`: MLflow's answers, byte for byte, from MLflow's own
             parsing and serialization, with less in between; the only one that can batch);
             `mlflow` runs MLflow's (`mlflow models serve`, uvicorn and FastAPI).
    workers: processes per replica (default 1): uvicorn workers for `server: mlflow` (more
             than one makes uvicorn run a process manager; without uvloop that adds ~44 ms
             to every response), forked workers sharing one socket for `server: declare`.
    host:    the IPv4 loopback address replicas listen on (default 127.0.0.1).
    launcher: how a replica's process is started (default fork): `fork` asks the state
             folder's fork server, which has MLflow imported already, to fork it (a
             replica answers within about a second); `exec` runs `mlflow models serve` (a
             new interpreter: several seconds), also what `fork` falls back to.
    replica_concurrency: concurrent requests one replica serves (default 4: one MLflow
             scoring-server worker, as Databricks counts 4 units of concurrency a replica);
             a served entity's concurrency range becomes a replica range by it.
    environments: the Python environment replicas run in (default shared): `shared` runs
             every model in declare's own virtualenv (a model needing a package it lacks
             fails at readiness); `per_model` gives each model environment its own
             virtualenv (`providers.local.envs`: what the model's MLflow artifacts require,
             built with uv, cached under state_dir/local/envs and shared by every entity
             that needs the same; the plan shows each as a build), and replicas start by
             `exec` in it (the fork server holds declare's environment only).
    pass_env: names (or `PREFIX*` patterns) of declare's environment that replicas get
             beyond the allow-list of declare.environment (default none); secrets
             (DECLARE_SECRET_*) never pass: a replica gets its own in environment_vars.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from declare.errors import ConfigError
from providers._shared import loopback_host, replica_concurrency_setting

__all__ = ["ENVIRONMENTS", "LAUNCHERS", "SERVERS", "LocalSettings"]

_ALLOWED_SETTINGS = (
    "server",
    "workers",
    "host",
    "launcher",
    "replica_concurrency",
    "pass_env",
    "environments",
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")
LAUNCHERS = ("fork", "exec")
SERVERS = ("declare", "mlflow")
ENVIRONMENTS = ("shared", "per_model")


@dataclass(frozen=True)
class LocalSettings:
    """The validated `providers.local` settings."""

    server: str = "declare"
    workers: int = 1
    host: str = "127.0.0.1"
    launcher: str = "fork"
    replica_concurrency: int = 4
    pass_env: tuple[str, ...] = ()
    environments: str = "shared"

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> LocalSettings:
        """Validate declare.yaml's `providers.local`; raise ConfigError naming the field."""
        unknown = sorted(set(raw) - set(_ALLOWED_SETTINGS))
        if unknown:
            raise ConfigError(
                f"providers.local: unknown setting {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(_ALLOWED_SETTINGS)}"
            )
        server = raw.get("server", "declare")
        if server not in SERVERS:
            raise ConfigError(
                f"providers.local.server: must be one of {', '.join(SERVERS)}, got {server!r}"
            )
        workers = raw.get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(
                f"providers.local.workers: must be a whole number of at least 1, got {workers!r}"
            )
        host = loopback_host(
            raw.get("host", "127.0.0.1"),
            "providers.local.host",
            "local replicas listen on loopback only",
        )
        launcher = raw.get("launcher", "fork")
        if launcher not in LAUNCHERS:
            raise ConfigError(
                f"providers.local.launcher: must be one of {', '.join(LAUNCHERS)}, got {launcher!r}"
            )
        pass_env = raw.get("pass_env", [])
        if not isinstance(pass_env, list) or not all(
            isinstance(n, str) and _ENV_NAME.match(n) for n in pass_env
        ):
            raise ConfigError(
                "providers.local.pass_env: must be a list of variable names (or NAME* "
                f"patterns), got {pass_env!r}"
            )
        environments = raw.get("environments", "shared")
        if environments not in ENVIRONMENTS:
            raise ConfigError(
                "providers.local.environments: must be one of "
                f"{', '.join(ENVIRONMENTS)}, got {environments!r}"
            )
        return cls(
            environments=environments,
            server=server,
            workers=workers,
            host=host,
            launcher=launcher,
            replica_concurrency=replica_concurrency_setting(raw, "local"),
            pass_env=tuple(pass_env),
        )
