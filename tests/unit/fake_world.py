"""A project folder whose boundaries are all in memory (the fake provider, gateway, probe,
clock and runtime), for the fast tests of the executor and of the runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from declare import engine
from declare.apply import ApplyResult, Event, Executor
from declare.config import load_config
from declare.diff import DesiredEndpoint
from declare.model import RolloutPolicy
from declare.plan.actions import Plan
from declare.project import Project
from declare.state.document import NOT_UPDATING, State
from providers.fake import FakeProvider
from tests.fakes import (
    FakeClock,
    FakeGateway,
    FakeProbe,
    FakeRuntime,
    GatewayWorld,
)
from tests.unit import planning_fixtures as pf

CANARY = {
    "strategy": "canary",
    "steps": [10, 50, 100],
    "bake_seconds": 5,
    "guards": {"max_error_rate": 0.05, "min_requests": 10},
}


class Crash(BaseException):
    """What SIGKILL does to an apply: it stops where it is, nothing is undone."""


def version(
    v: str, *, rollout: dict[str, Any] | None = None, size: str = "Small", **entity: Any
) -> DesiredEndpoint:
    """Endpoint iris serving iris v`v` at 100 % on the fake provider."""
    d = pf.desired((v, 100), size=size, **entity)
    spec = replace(d.spec, provider="fake")
    if rollout is not None:
        spec = replace(spec, rollout=RolloutPolicy.from_manifest(rollout))
    return replace(d, spec=spec)


@dataclass
class World:
    """A project folder whose boundaries are all in memory; survives "process" restarts."""

    folder: Path
    probe: FakeProbe
    clock: FakeClock
    events: list[Event]
    knobs: dict[str, set[str]]  # the fake provider's fail_* sets, shared by every instance
    runtime: FakeRuntime = field(default_factory=FakeRuntime)

    def project(self) -> Project:
        config = load_config(self.folder, {})
        project = Project(
            config, {}, FakeGateway(config.state_dir), self.probe, self.clock, self.runtime
        )
        provider = project.provider("fake")
        assert isinstance(provider, FakeProvider)
        provider.fail_start = self.knobs["start"]
        provider.fail_build = self.knobs["build"]
        provider.fail_stop = self.knobs["stop"]
        return project

    @property
    def provider(self) -> FakeProvider:
        provider = self.project().provider("fake")
        assert isinstance(provider, FakeProvider)
        return provider

    @property
    def gateway(self) -> GatewayWorld:
        return FakeGateway(self.project().config.state_dir).world

    def state(self) -> State:
        return self.project().read_state()

    def plan(self, *desired: DesiredEndpoint, **options: Any) -> Plan:
        project = self.project()
        opts = engine.PlanOptions(**options)
        return engine.plan_for(project, project.read_state(), desired, opts).plan

    def apply(
        self,
        *desired: DesiredEndpoint,
        hooks: Callable[[Event], None] | None = None,
        project: Project | None = None,
        **options: Any,
    ) -> ApplyResult:
        project = project or self.project()
        state = project.read_state()
        plan = engine.plan_for(project, state, desired, engine.PlanOptions(**options)).plan

        def record(event: Event) -> None:
            self.events.append(event)
            if hooks is not None:
                hooks(event)

        return Executor(project, plan, state, hooks=record, parallelism=1).run()

    def routed(self) -> dict[str, int]:
        table = self.gateway.table
        return dict(table.endpoints["iris"].routes) if "iris" in table.endpoints else {}

    def converged(self, *desired: DesiredEndpoint) -> None:
        """Nothing left to do; what runs is exactly what the state records."""
        assert not self.plan(*desired).has_changes
        state = self.state()
        recorded = sorted(r.id for r in state.all_replicas())
        assert recorded == list(self.provider.alive_ids())
        for ep in state.endpoints.values():
            assert ep.config_update == NOT_UPDATING
