"""Secret references in `environment_vars`: `{{secrets/<scope>/<key>}}`, as Databricks writes them.

A reference is resolved only at apply time, when a replica starts, from the environment of
the `declare` process: `DECLARE_SECRET_<SCOPE>_<KEY>` (upper case, every character that is
not a letter or digit becomes `_`), e.g. `{{secrets/team/api-key}}` ->
`DECLARE_SECRET_TEAM_API_KEY`. Plan checks that each reference can be resolved, without
reading its value into anything. The value goes only into the replica's environment: never
into the state, a plan, declare's output or a log. A value that is not a reference passes as
written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from declare.environment import SECRET_PREFIX
from declare.errors import ConfigError

REFERENCE = re.compile(r"^\{\{secrets/(?P<scope>[A-Za-z0-9_.@-]+)/(?P<key>[A-Za-z0-9_.-]+)\}\}$")
PREFIX = SECRET_PREFIX


def env_name(scope: str, key: str) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9]", "_", f"{scope}_{key}").upper()


def reference_env(value: str) -> str | None:
    """The environment variable that holds a reference's value; None for a plain value."""
    m = REFERENCE.match(value)
    return env_name(m["scope"], m["key"]) if m else None


def missing(env: Mapping[str, str], environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variable name, environment variable to set) for each reference that cannot resolve."""
    out = []
    for name, value in env.items():
        source = reference_env(value)
        if source is not None and not environ.get(source):
            out.append((name, source))
    return out


def resolve(env: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """`env` with every reference replaced by its value; ConfigError naming what is unset."""
    out = {}
    for name, value in env.items():
        source = reference_env(value)
        if source is None:
            out[name] = value
            continue
        secret = environ.get(source)
        if not secret:
            raise ConfigError(
                f"environment variable {name} refers to {value}, but {source} is not set"
            )
        out[name] = secret
    return out
