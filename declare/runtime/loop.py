"""The runtime's tick: look, decide, act (see the package docstring).

    look    the gateway's demand per served entity (a long poll: it answers early when a
            request is held or a replica cannot be reached), the recorded state, and what
            runs (the engine's refresh, through its plan of the recorded endpoints)
    decide  new replica targets (`decide`), crashes and recoveries (`healing`)
    act     only when something is to be done, and only under the state lock (timeout 0:
            an apply holds it, the tick does nothing): the state read again, the decisions
            recorded, the plan made again and carried out by the executor, failures of
            replacements recorded

The plan is made from the recorded endpoints (`DesiredEndpoint`s of the last applied specs,
never the manifests), in the engine's runtime mode, leaving out endpoints whose entity is
backing off and those that do not serve yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from declare import engine
from declare.apply import EndpointOutcome, Executor
from declare.apply.ledger import Ledger
from declare.diff import Actual, DesiredEndpoint
from declare.errors import DeclareError, StateLockedError
from declare.model import EntitySpec
from declare.plan.actions import Plan, StartReplica
from declare.project import Project
from declare.provider import replica_concurrency
from declare.routing import target_key
from declare.runtime import healing
from declare.runtime.decide import Demand, Memory, decide
from declare.state.backend import RUNTIME_OPERATION
from declare.state.document import EndpointRecord, State
from declare.state.scaling import EntityScale, ScaleEvent
from declare.views.apply import HumanApplyView

log = logging.getLogger("declare.runtime")

Key = tuple[str, str]  # (endpoint, served entity)


@dataclass(frozen=True)
class Decision:
    """A change to what the runtime records for one entity, and the event that says why."""

    endpoint: str
    entity: str
    scale: EntityScale
    event: ScaleEvent


def desired_endpoints(project: Project, state: State) -> tuple[DesiredEndpoint, ...]:
    """The recorded endpoints that serve, as the engine's desired endpoints."""
    out = []
    for record in state.endpoints.values():
        if record.spec is None or not record.routes:
            continue
        per_replica = replica_concurrency(project.provider(record.provider))
        out.append(DesiredEndpoint(record.spec, record.models, per_replica))
    return tuple(out)


def demand_of(report: Mapping[str, Any], record: EndpointRecord, entity: str) -> Demand:
    """The gateway's demand answer for one entity (under its target key now)."""
    generation = record.serving.get(entity, "")
    key = target_key(record.traffic(), entity, generation)
    raw = report.get("endpoints", {}).get(record.name, {}).get("entities", {}).get(key) or {}
    last = raw.get("last_request_at")
    return Demand(
        inflight=int(raw.get("inflight", 0)),
        held=int(raw.get("held", 0)),
        peak=int(raw.get("peak", 0)),
        last_request_at=float(last) if last is not None else None,
    )


def _scale_of(record: EndpointRecord, d: DesiredEndpoint, e: EntitySpec) -> EntityScale:
    gen = d.generation(e)
    recorded = record.scale.get(e.name)
    if recorded is not None and recorded.generation == gen:
        return recorded
    return EntityScale(target=d.target(e, record), generation=gen)


def _event(event: ScaleEvent) -> Callable[[EndpointRecord], EndpointRecord]:
    return lambda record: record.with_event(event)


def _recording(
    entity: str, scale: EntityScale, event: ScaleEvent
) -> Callable[[EndpointRecord], EndpointRecord]:
    return lambda record: record.with_scale(entity, scale, event)


class Runtime:
    """One project's runtime, tick after tick. Remembers between ticks the demand traces of
    every entity and the dead replicas it already counted as crashes."""

    def __init__(self, project: Project, out: TextIO) -> None:
        self.project = project
        self.settings = project.config.runtime
        self.memory = Memory()
        self.counted: set[str] = set()
        self.view = HumanApplyView(out=out, err=out, live=False)

    # -- look ------------------------------------------------------------------------------

    def demand(self) -> Mapping[str, Any]:
        """The gateway's demand (waiting up to poll_seconds); {} when no gateway answers."""
        admin = self.project.gateway.admin()
        if admin is None:
            self.project.clock.sleep(self.settings.poll_seconds)
            return {}
        try:
            with admin:
                return admin.demand(wait=self.settings.poll_seconds)
        except DeclareError as exc:
            log.warning("the gateway's demand could not be read: %s", exc)
            self.project.clock.sleep(self.settings.poll_seconds)
            return {}

    def remember(self, state: State, desired: tuple[DesiredEndpoint, ...], report: Any) -> None:
        now = self.project.clock.time()
        for d in desired:
            record = state.endpoints[d.spec.name]
            keep = max(
                d.spec.autoscaling.scale_down_after_seconds,
                d.spec.autoscaling.scale_to_zero_after_seconds,
            )
            for e in d.spec.entities:
                key = (d.spec.name, e.name)
                self.memory = self.memory.observe(
                    key, now, demand_of(report, record, e.name), keep + 60
                )

    # -- decide ------------------------------------------------------------------------------

    def scaling(
        self, state: State, desired: tuple[DesiredEndpoint, ...], report: Any
    ) -> list[Decision]:
        now = self.project.clock.time()
        out = []
        for d in desired:
            record = state.endpoints[d.spec.name]
            for e in d.spec.entities:
                scale = _scale_of(record, d, e)
                verdict = decide(
                    rng=d.range(e),
                    target=scale.target,
                    demand=demand_of(report, record, e.name),
                    trace=self.memory.trace((d.spec.name, e.name)),
                    policy=d.spec.autoscaling,
                    per_replica=d.per_replica,
                    now=now,
                    last_change_at=scale.at if scale.reason else None,
                )
                if verdict is None or verdict.target == scale.target:
                    continue
                kind = "wake" if scale.target == 0 else "zero" if verdict.target == 0 else "scale"
                out.append(
                    Decision(
                        d.spec.name,
                        e.name,
                        scale.with_target(verdict.target, verdict.reason, now),
                        ScaleEvent(now, e.name, kind, f"{scale.target} -> {verdict.target}: "
                                   f"{verdict.reason}"),
                    )
                )  # fmt: skip
        return out

    def health(
        self, state: State, desired: tuple[DesiredEndpoint, ...], actual: Actual
    ) -> list[Decision]:
        """Crashes (replicas dead soon after their start) and recoveries, per entity."""
        now = self.project.clock.time()
        stable = self.settings.stable_seconds
        out = []
        for d in desired:
            record = state.endpoints[d.spec.name]
            for e in d.spec.entities:
                scale = _scale_of(record, d, e)
                serving = record.serving_replicas(e.name)
                dead = [x for x in serving if not actual.alive(x.id)]
                new = [x for x in dead if x.id not in self.counted]
                crashed = [x for x in new if x.started_at and now - x.started_at < stable]
                self.counted.update(x.id for x in new)
                if crashed:
                    status = actual.replicas.get(crashed[0].id)
                    reason = f"replica {crashed[0].id} died {now - crashed[0].started_at:.0f} s "
                    reason += f"after its start: {status.reason if status else 'gone'}"
                    scale = healing.failed(scale, reason, now, self.settings.backoff_max_seconds)
                    event = ScaleEvent(now, e.name, "crash", healing.describe(scale, now))
                    out.append(Decision(d.spec.name, e.name, scale, event))
                elif (
                    scale.failures
                    and serving
                    and not dead
                    and all(now - x.started_at >= stable for x in serving)
                ):
                    event = ScaleEvent(now, e.name, "recovered", "replicas stay up again")
                    out.append(Decision(d.spec.name, e.name, healing.recovered(scale), event))
        return out

    def backing_off(self, state: State) -> frozenset[str]:
        """Endpoints with an entity in a crash loop's backoff: they start no replica now."""
        now = self.project.clock.time()
        return frozenset(
            name
            for name, record in state.endpoints.items()
            if any(s.backing_off(now) for s in record.scale.values())
        )

    # -- act ---------------------------------------------------------------------------------

    def tick(self) -> bool:
        """One look, and the action it calls for; True when something was done."""
        report = self.demand()
        state = self.project.read_state()
        desired = desired_endpoints(self.project, state)
        self.remember(state, desired, report)
        proposal = engine.plan_for(self.project, state, desired, self._options(state, desired))
        pending = self.scaling(state, desired, report) + self.health(
            state, desired, proposal.actual
        )
        if not pending and not proposal.plan.has_changes:
            return False
        try:
            lock = self.project.backend.lock(RUNTIME_OPERATION, 0.0)
        except StateLockedError:
            return False  # an apply runs: it has the endpoints
        try:
            self.act(report, pending)
        finally:
            self.project.backend.unlock(lock.id)
        return True

    def act(self, report: Any, pending: list[Decision]) -> None:
        project = self.project
        state = project.read_state()
        ledger = Ledger(project.backend, state, project.gateway, project.config.default_provider)
        for decision in pending:
            if decision.endpoint not in ledger.state.endpoints:
                continue
            log.info("%s/%s: %s", decision.endpoint, decision.entity, decision.event.detail)
            ledger.update(
                decision.endpoint, _recording(decision.entity, decision.scale, decision.event)
            )
        state = ledger.state
        desired = desired_endpoints(project, state)
        plan = engine.plan_for(project, state, desired, self._options(state, desired)).plan
        if not plan.has_changes:
            return
        executor = Executor(project, plan, state, hooks=self.view, record_status=False)
        result = executor.run()
        record_replacements(project, executor.state, plan, result.endpoints)
        record_failures(project, executor.state, result.endpoints, plan)

    def _options(self, state: State, desired: tuple[DesiredEndpoint, ...]) -> engine.PlanOptions:
        """The runtime's mode, leaving out the endpoints that do not serve yet (the
        manifests' business), and starting nothing for those backing off."""
        serving = {d.spec.name for d in desired}
        return engine.PlanOptions(
            runtime=True,
            exclude=frozenset(name for name in state.endpoints if name not in serving),
            no_starts=self.backing_off(state),
        )


def record_replacements(
    project: Project, state: State, plan: Plan, outcomes: tuple[EndpointOutcome, ...]
) -> None:
    """Each replica replaced without an apply, in its endpoint's events, with why."""
    now = project.clock.time()
    ok = {o.name for o in outcomes if o.ok}
    ledger = Ledger(project.backend, state, project.gateway, project.config.default_provider)
    for change in plan.changes:
        if change.name not in ok or change.name not in ledger.state.endpoints:
            continue
        for start in change.starts:
            if start.reason.startswith("replaces"):
                dead = start.reason.removeprefix("replaces ")
                why = next((d for d in change.drift if f"replica {dead} " in d), "")
                detail = f"{start.reason} ({why})" if why else start.reason
                event = ScaleEvent(now, start.entity.name, "replace", detail)
                log.info("%s/%s: %s", change.name, start.entity.name, start.reason)
                ledger.update(change.name, _event(event))


def record_failures(
    project: Project, state: State, outcomes: tuple[EndpointOutcome, ...], plan: Plan
) -> None:
    """A replacement that failed is one failure of each entity it started replicas of."""
    now = project.clock.time()
    ledger = Ledger(project.backend, state, project.gateway, project.config.default_provider)
    desired = {d.spec.name: d for d in desired_endpoints(project, state)}
    for outcome in outcomes:
        d = desired.get(outcome.name)
        if outcome.ok or d is None:
            continue
        record = state.endpoints[outcome.name]
        started = {
            a.payload.spec.entity
            for a in plan.actions_of(outcome.name)
            if isinstance(a.payload, StartReplica)
        }
        for e in d.spec.entities:
            if e.name not in started:
                continue
            scale = healing.failed(
                _scale_of(record, d, e),
                outcome.error,
                now,
                project.config.runtime.backoff_max_seconds,
            )
            event = ScaleEvent(now, e.name, "crash", healing.describe(scale, now))
            log.warning("%s/%s: %s", outcome.name, e.name, event.detail)
            ledger.update(outcome.name, _recording(e.name, scale, event))
