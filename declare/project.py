"""One project opened for a command: its settings, state backend, providers and gateway.

This is where the stages meet: load and resolve the desired endpoints, refresh what really
runs (providers and gateway), diff, and build the plan. The pure work is delegated to
`declare.diff` and `declare.plan`; this module does the reading. Executing a plan is
`declare.apply`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from declare import secrets
from declare.config import ProjectConfig, load_config
from declare.diff import Actual, Change, DesiredEndpoint, EndpointChange, diff
from declare.errors import (
    ConfigError,
    DeclareError,
    LocatedError,
    Location,
    ManifestError,
    ModelResolutionError,
)
from declare.gateway.client import GatewayClient
from declare.gateway.process import GatewayRecord, gateway_running, read_gateway_record
from declare.gateway.table import RoutingTable
from declare.manifests import load_project_manifests
from declare.model import EndpointSpec, ReplicaHandle, ResolvedModel, canonical_json
from declare.plan import GatewayInput, Plan, PlanInput, build_plan
from declare.plan.saved import observe
from declare.provider import BuildInfo, Provider, ProviderContext, ReplicaStatus, load_provider
from declare.resolve import Resolver
from declare.state.backend import StateBackend
from declare.state.document import State, generation_of
from declare.state.select import open_backend


@dataclass
class Project:
    config: ProjectConfig
    environ: Mapping[str, str]
    resolver: Resolver = field(init=False)
    _providers: dict[str, Provider] = field(default_factory=dict, init=False)
    _backend: StateBackend | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.resolver = Resolver(
            self.config.tracking_uri, self.config.registry_uri, self.config.project_dir
        )

    # -- parts ---------------------------------------------------------------------------

    @property
    def backend(self) -> StateBackend:
        """The state backend declare.yaml selects, opened on first use (validate needs none)."""
        if self._backend is None:
            self._backend = open_backend(self.config, self.environ)
        return self._backend

    @property
    def name(self) -> str:
        return self.config.project_name

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

    def gateway_token(self) -> str | None:
        env = self.config.gateway_auth_token_env
        if not env:
            return None
        token = self.environ.get(env)
        if not token:
            raise ConfigError(
                f"declare.yaml: gateway.auth_token_env names {env!r}, "
                "but that environment variable is not set"
            )
        return token

    def gateway_settings_hash(self) -> str:
        token = self.gateway_token()
        return hashlib.sha256(
            canonical_json(
                {
                    "host": self.config.gateway_host,
                    "port": self.config.gateway_port,
                    "token": hashlib.sha256(token.encode()).hexdigest() if token else None,
                    "max_body": self.config.gateway_max_body_bytes,
                    "queue_timeout": self.config.gateway_queue_timeout_seconds,
                }
            ).encode()
        ).hexdigest()[:16]

    def gateway_record(self) -> GatewayRecord | None:
        return read_gateway_record(self.config.state_dir)

    def gateway_client(self) -> GatewayClient | None:
        """A client of the running gateway, or None when none runs."""
        record = self.gateway_record()
        if record is None or not gateway_running(record):
            return None
        return GatewayClient(record.base_url, record.admin_token())

    def invocation_url(self, endpoint: str) -> str:
        host, port = self.config.gateway_host, self.config.gateway_port
        return f"http://{host}:{port}/serving-endpoints/{endpoint}/invocations"

    # -- stages --------------------------------------------------------------------------

    def read_state(self) -> State:
        return State.from_json(self.backend.read())

    def load_specs(self) -> tuple[EndpointSpec, ...]:
        return load_project_manifests(self.config.project_dir, self.config)

    def resolve(self, specs: tuple[EndpointSpec, ...]) -> tuple[DesiredEndpoint, ...]:
        """Pin every served entity's model; all failures reported together, located."""
        problems: list[LocatedError] = []
        out = []
        for spec in specs:
            models: dict[str, ResolvedModel] = {}
            for entity in spec.entities:
                try:
                    models[entity.name] = self.resolver.resolve(entity.model_uri)
                except ModelResolutionError as exc:
                    loc = entity.location or spec.location or Location(spec.name)
                    problems.append(LocatedError(loc, str(exc)))
            if len(models) == len(spec.entities):
                out.append(DesiredEndpoint(spec, models))
        if problems:
            raise ManifestError(problems)
        return tuple(out)

    def check_providers(self, specs: tuple[EndpointSpec, ...]) -> None:
        """Every provider the manifests use exists and can work (before anything changes)."""
        problems: list[LocatedError] = []
        for spec in specs:
            try:
                self.provider(spec.provider).check()
            except DeclareError as exc:
                loc = spec.location or Location(spec.name)
                problems.append(LocatedError(Location(loc.file, loc.line, "provider"), str(exc)))
        if problems:
            raise ManifestError(problems)

    def check_secrets(self, specs: tuple[EndpointSpec, ...]) -> None:
        """Every `{{secrets/...}}` reference can be resolved at apply time (values not read)."""
        problems: list[LocatedError] = []
        for spec in specs:
            for entity in spec.entities:
                for name, source in secrets.missing(entity.environment_vars, self.environ):
                    loc = entity.location or spec.location or Location(spec.name)
                    problems.append(
                        LocatedError(
                            Location(loc.file, loc.line, f"environment_vars.{name}"),
                            f"refers to a secret: set {source} in declare's environment",
                        )
                    )
        if problems:
            raise ManifestError(problems)

    def refresh(self, state: State, desired: tuple[DesiredEndpoint, ...]) -> Actual:
        statuses: dict[str, ReplicaStatus] = {}
        for record in state.all_replicas():
            statuses[record.id] = self.provider(record.handle.provider).status(record.handle)
        known = {r.id for r in state.all_replicas()}
        names = {d.spec.provider for d in desired} | {
            r.handle.provider for r in state.all_replicas()
        }
        names |= {ep.provider for ep in state.endpoints.values()}
        orphans: list[ReplicaHandle] = []
        for name in sorted(names):
            orphans += [h for h in self.provider(name).list_owned() if h.id not in known]
        client = self.gateway_client()
        table: RoutingTable | None = None
        if client is not None:
            with client:
                table = client.get_table()
        return Actual(
            replicas=statuses,
            orphans=tuple(orphans),
            gateway_running=client is not None,
            gateway_settings_hash=self.gateway_settings_hash(),
            gateway_table=table,
        )

    def builds(self, desired: tuple[DesiredEndpoint, ...]) -> dict[str, BuildInfo]:
        out: dict[str, BuildInfo] = {}
        for d in desired:
            provider = self.provider(d.spec.provider)
            for e in d.spec.entities:
                gen = generation_of(d.spec.provider, d.models[e.name], e.to_json())
                out[gen] = provider.build_info(d.models[e.name], e.workload_type)
        return out

    def observe(self, state: State, plan: Plan) -> dict[str, Any]:
        """What runs now, in the terms a saved plan recorded (for the staleness check)."""
        desired = tuple(c.after for c in plan.changes if c.after is not None)
        actual = self.refresh(state, desired)
        return observe(actual, self.builds(desired))

    def plan(
        self,
        state: State,
        desired: tuple[DesiredEndpoint, ...],
        options: PlanOptions | None = None,
    ) -> Planned:
        opts = options or PlanOptions()
        actual = self.refresh(state, desired)
        builds = self.builds(desired)
        recorded_hash = state.gateway.settings_hash if state.gateway else None
        changes = diff(desired, state, actual, recorded_hash, opts.replace)
        known = {c.name for c in changes}
        for endpoint, entity in sorted(opts.replace):
            d = next((x for x in desired if x.spec.name == endpoint), None)
            if d is None or all(e.name != entity for e in d.spec.entities):
                raise ConfigError(
                    f"--replace {endpoint}/{entity}: no such served entity in the manifests"
                )
        unknown = sorted(opts.targets - known)
        if unknown:
            raise ConfigError(
                f"--target {', '.join(unknown)}: no such endpoint in the manifests or the "
                f"state; endpoints: {', '.join(sorted(known)) or 'none'}"
            )
        orphans = actual.orphans
        gateway_needed = None
        if opts.targets:
            changes = tuple(c for c in changes if c.name in opts.targets)
            orphans = ()
            gateway_needed = bool(desired) or any(n not in opts.targets for n in state.endpoints)
        if opts.refresh_only:
            changes = tuple(_refresh_only(c) for c in changes)
            orphans = ()
            gateway_needed = actual.gateway_running
        plan = build_plan(
            PlanInput(
                project=self.name,
                changes=changes,
                gateway=GatewayInput(
                    running=actual.gateway_running,
                    host=self.config.gateway_host,
                    port=self.config.gateway_port,
                    settings_hash=actual.gateway_settings_hash,
                    # refresh-only never starts, restarts or stops the gateway
                    recorded_hash=None if opts.refresh_only else recorded_hash,
                ),
                builds=builds,
                orphans=orphans,
                destroy=opts.destroy,
                gateway_needed=gateway_needed,
            )
        )
        return Planned(plan, observe(actual, builds), actual)


@dataclass(frozen=True)
class PlanOptions:
    """Terraform's planning modes: -destroy, -target, -replace, -refresh-only."""

    destroy: bool = False
    targets: frozenset[str] = frozenset()
    replace: frozenset[tuple[str, str]] = frozenset()  # (endpoint, served entity)
    refresh_only: bool = False


@dataclass(frozen=True)
class Planned:
    plan: Plan
    observed: dict[str, Any]  # what the refresh saw, for saved plans (declare.plan.saved)
    actual: Actual


def _refresh_only(c: EndpointChange) -> EndpointChange:
    """Only what happened outside declare: dead replicas are forgotten; nothing restarts."""
    if c.before is None:
        return replace(c, kind=Change.NOOP, starts=(), stops=(), forgets=(), route_push=False)
    return replace(
        c,
        kind=Change.UPDATE if c.forgets else Change.NOOP,
        fields=(),
        starts=(),
        stops=(),
        after=None,
        route_push=False,
        capacity_after=c.capacity_before,
        capacity_peak=c.capacity_before,
    )


def open_project(
    project_dir: Path | str = ".", environ: Mapping[str, str] | None = None
) -> Project:
    env = dict(os.environ if environ is None else environ)
    path = Path(project_dir).resolve()
    if not path.is_dir():
        raise ConfigError(f"project folder {project_dir} does not exist or is not a folder")
    return Project(load_config(path, env), env)
