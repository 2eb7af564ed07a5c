"""Project settings: declare.yaml (optional), the environment, and defaults, in that order.

`load_config(project_dir, environ)` reads `<project_dir>/declare.yaml` when it exists,
validates it against schemas/project.schema.json (problems are located and raised together
as one `ManifestError`) and returns an immutable `ProjectConfig`:

    project_name        `project:` or the folder name ('-' for characters a label cannot hold)
    tracking_uri        mlflow.tracking_uri > MLFLOW_TRACKING_URI > sqlite:///<project>/mlflow.db
    registry_uri        mlflow.registry_uri > mlflow.tracking_uri > MLFLOW_REGISTRY_URI
                        > tracking_uri.  A declare.yaml that pins its tracking store keeps
                        the registry there too: stray shell variables do not split them.
    state_dir           state.path (default `state`), relative to the project
    state_backend       state.backend: local (default) or postgres with state.dsn_env (the
                        name of the env var holding the DSN; never the DSN itself), schema,
                        table, workspace (default: the project name)
    gateway_*           host (default 127.0.0.1; beyond loopback only with the risks named
                        in allow_insecure: plaintext, unauthenticated), port 8787, auth
                        token env var name (none), max body 16 MiB, queue timeout 30 s, request head
                        timeout 10 s, idle (keep-alive) timeout 75 s, access_log (off)
    default_provider    local;  providers: raw per-provider settings
    ready/drain timeouts 180 s / 30 s;  manifest include/exclude globs
    capture_*           capture.root: the folder of the endpoints' inference tables (default
                        <state_dir>/capture), capture.max_payload_bytes (default 1 MiB)
    runtime             enabled (default true), poll 0.5 s, stable 30 s, backoff up to 300 s,
                        supervisor declare (runtime and keeper) or systemd (its unit)

Relative paths and relative sqlite URIs in declare.yaml are relative to the project folder;
relative ones in the environment to the current directory (as MLflow itself reads them). All
of them come out absolute.

Does not contact MLflow, check providers, or read manifests. It uses declare.manifests'
reader, schema check and defaults (declare.yaml is read like a manifest, with lines), never
the other way round: manifests get the settings they need (`manifest_include`,
`manifest_exclude`, `default_provider`) from the caller as plain values.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from declare.errors import ConfigError, LocatedError, ManifestError
from declare.manifests import (
    CONFIG_FILE,
    DEFAULT_INCLUDE,
    DEFAULT_PROVIDER,
    PROJECT_SCHEMA,
    Document,
    read_documents,
    schema_problems,
    sort_problems,
)
from declare.model.names import PROJECT_NAME_MAX

DEFAULT_GATEWAY_HOST = "127.0.0.1"
DEFAULT_GATEWAY_PORT = 8787
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_QUEUE_TIMEOUT_SECONDS = 30.0
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_IDLE_TIMEOUT_SECONDS = 75.0
DEFAULT_READY_TIMEOUT_SECONDS = 180.0
DEFAULT_DRAIN_TIMEOUT_SECONDS = 30.0
DEFAULT_CAPTURE_MAX_PAYLOAD_BYTES = 1024 * 1024  # Databricks logs payloads up to 1 MiB
STATE_BACKENDS = ("local", "postgres")
POSTGRES_STATE_KEYS = ("dsn_env", "schema", "table", "workspace")


@dataclass(frozen=True)
class StateBackendSettings:
    """declare.yaml `state.backend` and its settings (`declare.state.select` opens it)."""

    backend: str = "local"
    dsn_env: str | None = None  # postgres: the env var holding the connection string
    schema: str = "public"
    table: str = "declare_state"
    workspace: str | None = None  # postgres: the state's key; None: the project name


@dataclass(frozen=True)
class RuntimeSettings:
    """declare.yaml `runtime:`: whether the runtime runs, and its timings."""

    enabled: bool = True
    poll_seconds: float = 0.5
    stable_seconds: float = 30.0
    backoff_max_seconds: float = 300.0
    supervisor: str = "declare"  # or "systemd": its unit restarts it, apply spawns nothing

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "poll_seconds": self.poll_seconds,
            "stable_seconds": self.stable_seconds,
            "backoff_max_seconds": self.backoff_max_seconds,
            "supervisor": self.supervisor,
        }


@dataclass(frozen=True)
class ProjectConfig:
    """Every setting of one project, resolved (absolute paths, defaults applied)."""

    project_dir: Path
    project_name: str
    tracking_uri: str
    registry_uri: str
    state_dir: Path
    gateway_host: str = DEFAULT_GATEWAY_HOST
    gateway_port: int = DEFAULT_GATEWAY_PORT
    gateway_auth_token_env: str | None = None
    gateway_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    gateway_queue_timeout_seconds: float = DEFAULT_QUEUE_TIMEOUT_SECONDS
    gateway_header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    gateway_idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT_SECONDS
    gateway_access_log: bool = False  # state/gateway/access.log, one JSON line per request
    default_provider: str = DEFAULT_PROVIDER
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ready_timeout_seconds: float = DEFAULT_READY_TIMEOUT_SECONDS
    drain_timeout_seconds: float = DEFAULT_DRAIN_TIMEOUT_SECONDS
    manifest_include: tuple[str, ...] = DEFAULT_INCLUDE
    manifest_exclude: tuple[str, ...] = ()
    config_file: Path | None = None  # declare.yaml when the project has one
    state_backend: StateBackendSettings = field(default_factory=StateBackendSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    capture_root: Path | None = None  # None: <state_dir>/capture
    capture_max_payload_bytes: int = DEFAULT_CAPTURE_MAX_PAYLOAD_BYTES

    def provider_settings(self, name: str) -> Mapping[str, Any]:
        """declare.yaml `providers.<name>`, or an empty mapping."""
        return self.providers.get(name, {})

    def gateway_auth_token(self, environ: Mapping[str, str]) -> str | None:
        """The gateway's bearer token from the named environment variable, if one is named."""
        if self.gateway_auth_token_env is None:
            return None
        token = environ.get(self.gateway_auth_token_env, "")
        if not token:
            raise ConfigError(
                f"gateway.auth_token_env names {self.gateway_auth_token_env}, "
                "but that environment variable is not set or empty"
            )
        return token


def _absolute_uri(uri: str, base: Path) -> str:
    """Make a relative sqlite path, file: path or plain path absolute against `base`."""
    if uri.startswith("sqlite:///"):
        rest, sep, query = uri[len("sqlite:///") :].partition("?")
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return f"sqlite:///{(base / rest).resolve()}{sep}{query}"
        return uri
    if uri.startswith("file:"):
        rest = uri[len("file:") :]
        if rest and not rest.startswith("/"):
            return f"file://{(base / rest).resolve()}"
        return uri
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):
        return uri  # another scheme (http, databricks, postgresql, ...): as it is
    return str((base / uri).resolve())


def _folder_name(project_dir: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", project_dir.name).lstrip(".-_") or "project"
    return name[:PROJECT_NAME_MAX]


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _read_config_file(path: Path) -> tuple[Document | None, list[LocatedError]]:
    documents, problems = read_documents(path, CONFIG_FILE)
    if problems:
        return None, problems
    if not documents:
        return None, []
    if len(documents) > 1:
        extra = documents[1]
        return None, [extra.problem((), "declare.yaml must hold one document")]
    return documents[0], []


def _check(document: Document) -> list[LocatedError]:
    if not isinstance(document.value, dict):
        return [document.problem((), "declare.yaml must be a mapping of settings")]
    problems = schema_problems(document, PROJECT_SCHEMA)
    problems += _state_backend_problems(document)
    problems += _network_problems(document)
    return problems


def _network_problems(document: Document) -> list[LocatedError]:
    """A gateway beyond loopback needs TLS and authentication, or the user's explicit
    `gateway.allow_insecure` naming each risk taken (`plaintext`, `unauthenticated`).
    This declare serves no TLS yet, so beyond loopback `plaintext` is always needed."""
    gateway = _section(document.value, "gateway")
    host = gateway.get("host")
    if not isinstance(host, str) or _is_loopback(host):
        return []
    allowed = gateway.get("allow_insecure", [])
    allowed = set(allowed) if isinstance(allowed, list) else set()
    risks = []
    if "plaintext" not in allowed:
        risks.append(("plaintext", "without TLS (this declare cannot serve TLS yet)"))
    if "auth_token_env" not in gateway and "unauthenticated" not in allowed:
        risks.append(("unauthenticated", "without authentication (no gateway.auth_token_env)"))
    return [
        document.problem(
            ("gateway", "host"),
            f"{host!r} is not a loopback address: the gateway would face a network {what}; "
            f"add {risk!r} to gateway.allow_insecure to accept that risk",
        )
        for risk, what in risks
    ]


def _state_backend_problems(document: Document) -> list[LocatedError]:
    """`state.dsn_env` is required by the postgres backend; its keys mean nothing to local."""
    state = _section(document.value, "state")
    backend = state.get("backend", "local")
    if backend == "postgres" and "dsn_env" not in state:
        return [
            document.problem(
                ("state",),
                "state.backend postgres needs dsn_env: the name of the environment variable "
                "that holds the connection string (credentials never go in declare.yaml)",
            )
        ]
    if backend == "local":
        return [
            document.problem(("state", key), "only applies to state.backend: postgres")
            for key in POSTGRES_STATE_KEYS
            if key in state
        ]
    return []


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_settings(project_dir: Path) -> tuple[Mapping[str, Any], Path | None]:
    """declare.yaml's settings (empty without one) and its path; its problems raised together."""
    candidate = project_dir / CONFIG_FILE
    if not candidate.is_file():
        return {}, None
    data: Mapping[str, Any] = {}
    document, problems = _read_config_file(candidate)
    if document is not None:
        problems = _check(document)
        data = document.value
    if problems:
        raise ManifestError(sort_problems(problems))
    return data, candidate


def _mlflow_uris(
    mlflow: Mapping[str, Any], project_dir: Path, environ: Mapping[str, str]
) -> tuple[str, str]:
    """The tracking and registry URIs, absolute (the order is in the module docstring)."""
    cwd = Path(os.getcwd())
    yaml_tracking = mlflow.get("tracking_uri")
    yaml_registry = mlflow.get("registry_uri")
    if yaml_tracking:
        tracking = _absolute_uri(yaml_tracking, project_dir)
    elif environ.get("MLFLOW_TRACKING_URI"):
        tracking = _absolute_uri(environ["MLFLOW_TRACKING_URI"], cwd)
    else:
        tracking = f"sqlite:///{project_dir / 'mlflow.db'}"
    if yaml_registry:
        registry = _absolute_uri(yaml_registry, project_dir)
    elif not yaml_tracking and environ.get("MLFLOW_REGISTRY_URI"):
        registry = _absolute_uri(environ["MLFLOW_REGISTRY_URI"], cwd)
    else:
        registry = tracking
    return tracking, registry


def _state_backend(state: Mapping[str, Any]) -> StateBackendSettings:
    """declare.yaml `state.backend` and its postgres settings, defaults applied."""
    return StateBackendSettings(
        backend=state.get("backend", "local"),
        dsn_env=state.get("dsn_env"),
        schema=state.get("schema", "public"),
        table=state.get("table", "declare_state"),
        workspace=state.get("workspace"),
    )


def load_config(project_dir: Path, environ: Mapping[str, str]) -> ProjectConfig:
    """The settings of the project in `project_dir` (see the module docstring)."""
    project_dir = Path(project_dir).resolve()
    if not project_dir.is_dir():
        raise ConfigError(f"project folder {project_dir} does not exist or is not a folder")
    data, config_path = _read_settings(project_dir)
    tracking, registry = _mlflow_uris(_section(data, "mlflow"), project_dir, environ)
    state = _section(data, "state")
    gateway = _section(data, "gateway")
    timeouts = _section(data, "timeouts")
    manifests = _section(data, "manifests")
    providers = _section(data, "providers")
    capture = _section(data, "capture")
    return ProjectConfig(
        project_dir=project_dir,
        project_name=data.get("project") or _folder_name(project_dir),
        tracking_uri=tracking,
        registry_uri=registry,
        state_dir=(project_dir / state.get("path", "state")).resolve(),
        gateway_host=gateway.get("host", DEFAULT_GATEWAY_HOST),
        gateway_port=int(gateway.get("port", DEFAULT_GATEWAY_PORT)),
        gateway_auth_token_env=gateway.get("auth_token_env"),
        gateway_max_body_bytes=int(gateway.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)),
        gateway_queue_timeout_seconds=float(
            gateway.get("queue_timeout_seconds", DEFAULT_QUEUE_TIMEOUT_SECONDS)
        ),
        gateway_header_timeout_seconds=float(
            gateway.get("header_timeout_seconds", DEFAULT_HEADER_TIMEOUT_SECONDS)
        ),
        gateway_idle_timeout_seconds=float(
            gateway.get("idle_timeout_seconds", DEFAULT_IDLE_TIMEOUT_SECONDS)
        ),
        gateway_access_log=bool(gateway.get("access_log", False)),
        default_provider=data.get("default_provider", DEFAULT_PROVIDER),
        providers={name: dict(settings) for name, settings in providers.items()},
        ready_timeout_seconds=float(timeouts.get("ready_seconds", DEFAULT_READY_TIMEOUT_SECONDS)),
        drain_timeout_seconds=float(timeouts.get("drain_seconds", DEFAULT_DRAIN_TIMEOUT_SECONDS)),
        manifest_include=tuple(manifests.get("include", DEFAULT_INCLUDE)),
        manifest_exclude=tuple(manifests.get("exclude", ())),
        config_file=config_path,
        state_backend=_state_backend(state),
        runtime=_runtime(_section(data, "runtime")),
        capture_root=(project_dir / capture["root"]).resolve() if "root" in capture else None,
        capture_max_payload_bytes=int(
            capture.get("max_payload_bytes", DEFAULT_CAPTURE_MAX_PAYLOAD_BYTES)
        ),
    )


def _runtime(section: Mapping[str, Any]) -> RuntimeSettings:
    default = RuntimeSettings()
    return RuntimeSettings(
        enabled=bool(section.get("enabled", default.enabled)),
        poll_seconds=float(section.get("poll_seconds", default.poll_seconds)),
        stable_seconds=float(section.get("stable_seconds", default.stable_seconds)),
        backoff_max_seconds=float(section.get("backoff_max_seconds", default.backoff_max_seconds)),
        supervisor=str(section.get("supervisor", default.supervisor)),
    )
