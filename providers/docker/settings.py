"""The docker provider's settings (`providers.docker` in declare.yaml), validated.

Parses and checks values only: no engine is contacted and nothing is read from disk here.
Every problem is a `ConfigError` that names the field and says what is allowed.

    engine          Docker engine URL: unix:///var/run/docker.sock, tcp://host:2376,
                    ssh://user@host. Default: DOCKER_HOST, else the local socket.
    base_image      image the model environments are built on (default python:3.11-slim);
                    it must have python3 with the venv module, at `python_version`.
    python_version  the base image's Python, major.minor (default 3.11): the wheels are
                    resolved for it, and a model logged with another Python is refused.
    image_repo      repository of the built images (default declare-env); tag = content hash.
    host            loopback address replicas listen on with host networking (127.0.0.1).
    wheel_cache     folder of the host's wheel cache (default $XDG_CACHE_HOME/declare/wheels,
                    i.e. ~/.cache/declare/wheels); relative paths are relative to the project.
    mlflow_package  what a model's `mlflow` requirement is installed as (mlflow-skinny:
                    the scoring server without the tracking server's dependencies).
    extra_requirements  more pip requirements for every image (e.g. a flavor's optional deps).
    cpus, memory    limits of one CPU replica (default 1 CPU, 2g); GPU workloads: see
                    `providers.docker.workloads`.
    restart_policy  no | on-failure | always | unless-stopped (default no: declare's runtime
                    replaces a dead container, with the same backoff as any replica; with
                    another policy the engine restarts it in place, and a container the
                    engine is restarting counts as alive, so nobody restarts it twice).
    replica_concurrency  concurrent requests one replica serves (default 4: one MLflow
                    scoring-server worker); with an entity's provisioned concurrency it
                    gives the entity's replica range.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from declare.errors import ConfigError
from providers._shared import loopback_host, replica_concurrency_setting

__all__ = ["DEFAULT_BASE_IMAGE", "DockerSettings", "parse_memory"]

DEFAULT_BASE_IMAGE = "python:3.11-slim"
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
_ALLOWED = (
    "engine",
    "base_image",
    "python_version",
    "image_repo",
    "host",
    "wheel_cache",
    "mlflow_package",
    "extra_requirements",
    "cpus",
    "memory",
    "restart_policy",
    "replica_concurrency",
)
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_REPO = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$")
_ENGINE = re.compile(r"^(unix|tcp|ssh|npipe|http|https)://")
_PYTHON = re.compile(r"3\.\d{1,2}\Z")


def parse_memory(value: Any, field: str) -> int:
    """Bytes from 512m, 2g, 2GiB or a whole number of bytes; ConfigError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _MEMORY.match(str(value)) if isinstance(value, str) else None
    if m is None or float(m[1]) <= 0:
        raise ConfigError(
            f"providers.docker.{field}: {value!r} is not an amount of memory such as 512m or 2g"
        )
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m[2].lower()]
    return int(float(m[1]) * scale)


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "declare" / "wheels"


@dataclass(frozen=True)
class DockerSettings:
    """The validated `providers.docker` settings (see the module docstring)."""

    engine: str | None = None
    base_image: str = DEFAULT_BASE_IMAGE
    python_version: str = "3.11"
    image_repo: str = "declare-env"
    host: str = "127.0.0.1"
    wheel_cache: Path = Path()
    mlflow_package: str = "mlflow-skinny"
    extra_requirements: tuple[str, ...] = ()
    cpus: float = 1.0
    memory_bytes: int = 2 * 2**30
    restart_policy: str = "no"
    replica_concurrency: int = 4

    @classmethod
    def parse(cls, raw: Mapping[str, Any], project_dir: Path) -> DockerSettings:
        """Validate declare.yaml's `providers.docker`; raise ConfigError naming the field."""
        unknown = sorted(set(raw) - set(_ALLOWED))
        if unknown:
            raise ConfigError(
                f"providers.docker: unknown setting {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(_ALLOWED)}"
            )
        engine = _engine(raw)
        python_version = _python_version(raw)
        image_repo = _image_repo(raw)
        host = loopback_host(
            _text(raw, "host", "127.0.0.1"),
            "providers.docker.host",
            "replicas use host networking and listen on loopback only",
        )
        cache = _wheel_cache(raw, project_dir)
        extra = _extra_requirements(raw)
        cpus = _cpus(raw)
        policy = _restart_policy(raw)
        return cls(
            engine=engine,
            base_image=_text(raw, "base_image", DEFAULT_BASE_IMAGE),
            python_version=python_version,
            image_repo=image_repo,
            host=host,
            wheel_cache=cache,
            mlflow_package=_text(raw, "mlflow_package", "mlflow-skinny"),
            extra_requirements=extra,
            cpus=cpus,
            memory_bytes=parse_memory(raw.get("memory", "2g"), "memory"),
            restart_policy=policy,
            replica_concurrency=replica_concurrency_setting(raw, "docker"),
        )


def _text(raw: Mapping[str, Any], name: str, default: str) -> str:
    value = raw.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"providers.docker.{name}: must be a non-empty string")
    return value.strip()


def _matching(
    raw: Mapping[str, Any], name: str, default: str, pattern: re.Pattern[str], is_not: str
) -> str:
    """The text setting `name`; ConfigError saying it `is_not` what `pattern` matches."""
    value = _text(raw, name, default)
    if not pattern.match(value):
        raise ConfigError(f"providers.docker.{name}: {value!r} is not {is_not}")
    return value


def _engine(raw: Mapping[str, Any]) -> str | None:
    if raw.get("engine") is None:
        return None
    return _matching(
        raw,
        "engine",
        "",
        _ENGINE,
        "a Docker engine URL; use unix:///var/run/docker.sock, tcp://HOST:PORT or ssh://USER@HOST",
    )


def _python_version(raw: Mapping[str, Any]) -> str:
    return _matching(raw, "python_version", "3.11", _PYTHON, "a Python major.minor such as 3.11")


def _image_repo(raw: Mapping[str, Any]) -> str:
    return _matching(
        raw,
        "image_repo",
        "declare-env",
        _REPO,
        "an image repository name (lowercase letters, digits, '.', '_', '-', '/')",
    )


def _wheel_cache(raw: Mapping[str, Any], project_dir: Path) -> Path:
    if raw.get("wheel_cache") is None:
        return _default_cache()
    cache = Path(_text(raw, "wheel_cache", ""))
    return cache if cache.is_absolute() else (project_dir / cache).resolve()


def _extra_requirements(raw: Mapping[str, Any]) -> tuple[str, ...]:
    extra = raw.get("extra_requirements", [])
    if not isinstance(extra, list) or not all(isinstance(x, str) and x for x in extra):
        raise ConfigError("providers.docker.extra_requirements: must be a list of pip requirements")
    return tuple(x.strip() for x in extra)


def _cpus(raw: Mapping[str, Any]) -> float:
    cpus = raw.get("cpus", 1.0)
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus < 0.01:
        raise ConfigError(f"providers.docker.cpus: must be a number >= 0.01, got {cpus!r}")
    return float(cpus)


def _restart_policy(raw: Mapping[str, Any]) -> str:
    policy = _text(raw, "restart_policy", "no")
    if policy not in RESTART_POLICIES:
        raise ConfigError(
            f"providers.docker.restart_policy: {policy!r}; allowed: " + ", ".join(RESTART_POLICIES)
        )
    return policy
