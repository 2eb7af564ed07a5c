"""One project opened for a command: the workspace the stages work in.

A `Project` holds the project's settings (declare.yaml), declare's environment, and the
boundaries every stage acts through: the state backend, the providers, the MLflow resolver,
the gateway (`declare.ports.GatewayControl`), readiness probing and the clock. It runs no
stage itself: the pipeline from manifests to a plan is `declare.engine`, carrying a plan out
is `declare.apply`. Tests build one with in-memory boundaries (a fake gateway, probe, clock).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from declare.config import ProjectConfig, load_config
from declare.errors import ConfigError, GatewayError
from declare.gateway_control import CAPTURE_DIR, ProcessGateway
from declare.model import canonical_json
from declare.ports import (
    DEFAULT_HOLD_QUEUE,
    Clock,
    GatewayControl,
    GatewaySettings,
    Probe,
    RuntimeControl,
    SystemClock,
)
from declare.provider import Provider, ProviderContext, load_provider
from declare.readiness import HttpProbe
from declare.resolve import Resolver
from declare.runtime_control import ProcessRuntime
from declare.secrets import PREFIX as SECRET_PREFIX
from declare.state.backend import StateBackend
from declare.state.document import State
from declare.state.schema import load_state
from declare.state.select import open_backend


@dataclass
class Project:
    """The workspace: settings, environment and boundaries (opened lazily, cached)."""

    config: ProjectConfig
    environ: Mapping[str, str]
    gateway: GatewayControl
    probe: Probe = field(default_factory=HttpProbe)
    clock: Clock = field(default_factory=SystemClock)
    runtime_control: RuntimeControl | None = None  # None: the runtime as processes
    resolver: Resolver = field(init=False)
    _providers: dict[str, Provider] = field(default_factory=dict, init=False)
    _backend: StateBackend | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.resolver = Resolver(
            self.config.tracking_uri, self.config.registry_uri, self.config.project_dir
        )

    @property
    def name(self) -> str:
        return self.config.project_name

    @property
    def backend(self) -> StateBackend:
        """The state backend declare.yaml selects, opened on first use (validate needs none)."""
        if self._backend is None:
            self._backend = open_backend(self.config, self.environ)
        return self._backend

    @property
    def runtime(self) -> RuntimeControl:
        """The project's runtime (healing, autoscaling between applies)."""
        if self.runtime_control is None:
            self.runtime_control = ProcessRuntime(
                self.config.project_dir,
                self.config.state_dir,
                self.config.runtime.supervisor,
                frozenset(self.runtime_environment()),
            )
        return self.runtime_control

    def runtime_environment(self) -> dict[str, str]:
        """The variables the runtime acts with: secrets, MLflow's, the state's connection
        and the gateway's token (what replicas and the gateway it starts need)."""
        cfg = self.config
        names = {cfg.gateway_auth_token_env, cfg.state_backend.dsn_env}
        return {
            k: v
            for k, v in self.environ.items()
            if k.startswith((SECRET_PREFIX, "MLFLOW_")) or k in names
        }

    def runtime_settings_hash(self) -> str:
        """What the runtime is started with: its settings, and a fingerprint of the parts
        of the environment it acts with (secrets, MLflow, the state's connection, the
        gateway's token), hashed value by value so that no value is ever recorded. A change
        of any of them restarts the runtime at the next apply."""
        relevant = sorted(
            (k, hashlib.sha256(v.encode()).hexdigest())
            for k, v in self.runtime_environment().items()
        )
        return hashlib.sha256(
            canonical_json({"settings": self.config.runtime.to_json(), "env": relevant}).encode()
        ).hexdigest()[:16]

    def read_state(self) -> State:
        """The stored state, every field checked (StateDocumentError, located, when one is
        wrong; the stored document is left as it is)."""
        return load_state(self.backend.read(), self.backend.location)

    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            context = ProviderContext(
                project=self.name,
                project_dir=self.config.project_dir,
                state_dir=self.config.state_dir,
                settings=dict(self.config.providers.get(name, {})),
            )
            self._providers[name] = load_provider(name, context)
        return self._providers[name]

    def gateway_settings(self) -> GatewaySettings:
        """How the gateway should run; ConfigError when its token variable is not set."""
        cfg = self.config
        return GatewaySettings(
            host=cfg.gateway_host,
            port=cfg.gateway_port,
            auth_token=cfg.gateway_auth_token(self.environ),
            max_body_bytes=cfg.gateway_max_body_bytes,
            queue_timeout_seconds=cfg.gateway_queue_timeout_seconds,
            header_timeout_seconds=cfg.gateway_header_timeout_seconds,
            idle_timeout_seconds=cfg.gateway_idle_timeout_seconds,
            hold_queue=DEFAULT_HOLD_QUEUE if cfg.runtime.enabled else 0,
            capture_root=cfg.capture_root,
            capture_max_payload_bytes=cfg.capture_max_payload_bytes,
            access_log=cfg.gateway_access_log,
        )

    def capture_root(self) -> Path:
        """The folder of the endpoints' inference tables (declare.yaml `capture.root`)."""
        return self.config.capture_root or self.config.state_dir / CAPTURE_DIR

    def capture_counters(self) -> dict[str, int] | None:
        """The running gateway's capture counters (captured, dropped, ...), or None when no
        gateway runs or it cannot say."""
        admin = self.gateway.admin()
        if admin is None:
            return None
        try:
            counters = admin.metrics().get("capture")
        except GatewayError:
            return None
        return dict(counters) if isinstance(counters, dict) else None

    def invocation_url(self, endpoint: str) -> str:
        host, port = self.config.gateway_host, self.config.gateway_port
        return f"http://{host}:{port}/serving-endpoints/{endpoint}/invocations"


def open_project(
    project_dir: Path | str = ".", environ: Mapping[str, str] | None = None
) -> Project:
    env = dict(os.environ if environ is None else environ)
    path = Path(project_dir).resolve()
    if not path.is_dir():
        raise ConfigError(f"project folder {project_dir} does not exist or is not a folder")
    config = load_config(path, env)
    return Project(config, env, ProcessGateway(config.state_dir))
