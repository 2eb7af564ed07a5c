"""Carry out a plan: walk its DAG, run each action through a provider or the gateway, write
the state after every finished action, and undo a failed endpoint's finished actions.

A failing endpoint never takes the old version down: traffic moves only in `set-routes`,
which runs after every new replica answered a real prediction; if anything of the endpoint
fails, the replicas it started are stopped, routes it switched are switched back, and the
endpoint records UPDATE_FAILED with the reason. Other endpoints go on. Reading manifests,
diffing and planning happen before this module is called.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from declare import secrets
from declare.dag import Outcome, walk
from declare.diff import Change, EndpointChange
from declare.errors import DeclareError, GatewayError, RolloutGuardError
from declare.gateway.process import start_gateway, stop_gateway
from declare.model import (
    EndpointSpec,
    Guards,
    ReplicaHandle,
    ReplicaSpec,
    ResolvedModel,
)
from declare.plan.actions import Action, ActionKind, Plan
from declare.project import Project
from declare.provider import Liveness
from declare.readiness import await_ready
from declare.resolve import load_input_example
from declare.routing import routing_table, target_key
from declare.state.document import (
    IN_PROGRESS,
    NOT_UPDATING,
    UPDATE_FAILED,
    EndpointRecord,
    GatewayRecordState,
    ReplicaRecord,
    State,
)

Printer = Callable[[str], None]


@dataclass
class EndpointOutcome:
    name: str
    change: Change
    ok: bool
    error: str = ""


@dataclass
class ApplyResult:
    endpoints: list[EndpointOutcome] = field(default_factory=list)
    global_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.global_errors and all(e.ok for e in self.endpoints)


class Executor:
    def __init__(
        self, project: Project, plan: Plan, state: State, printer: Printer, parallelism: int
    ) -> None:
        self.project = project
        self.plan = plan
        self.state = state
        self.print = printer
        self.parallelism = parallelism
        self._lock = threading.RLock()
        self._slots: dict[str, ReplicaHandle] = {}
        self._failed: dict[str, str] = {}  # endpoint -> first error
        self._done: dict[str, list[Action]] = {}  # endpoint -> finished actions, in order
        self._route_snapshots: dict[str, EndpointRecord] = {}  # before the first shift
        self._ran: dict[str, list[Action]] = {}  # endpoint -> actions begun (done or failed)
        self._started_at: dict[str, float] = {}  # endpoint -> when its first action began
        self._begun: set[str] = set()
        self._changes = {c.name: c for c in plan.changes}

    # -- state ---------------------------------------------------------------------------

    def _commit(self, new: State) -> None:
        with self._lock:
            written = self.project.backend.write(new.to_json())
            self.state = replace(new, serial=written["serial"], lineage=written["lineage"])

    def _update(self, name: str, fn: Callable[[EndpointRecord], EndpointRecord]) -> None:
        with self._lock:
            record = self.state.endpoint(name, self._provider_of(name))
            self._commit(self.state.with_endpoint(fn(record)))

    def _provider_of(self, name: str) -> str:
        change = self._changes.get(name)
        if change is not None:
            return change.provider
        return self.project.config.default_provider

    def _push_table(self, required: bool) -> None:
        client = self.project.gateway_client()
        if client is None:
            if required:
                raise GatewayError("the gateway is not running, so routes cannot be switched")
            return
        with client, self._lock:
            client.put_table(routing_table(self.state))

    def _push_best_effort(self) -> None:
        """Push the table for status display; a gateway problem here changes no outcome."""
        try:
            self._push_table(required=False)
        except DeclareError as exc:
            self.print(f"note: the gateway did not take the new status: {exc}")

    # -- walking -------------------------------------------------------------------------

    def run(self) -> ApplyResult:
        started = time.monotonic()
        graph = self.plan.graph()
        actions = {a.id: a for a in self.plan.actions}
        order = {a.id: i for i, a in enumerate(self.plan.actions)}

        def skip(node: Hashable) -> bool:
            a = actions[str(node)]
            return a.endpoint is not None and a.endpoint in self._failed

        def run_one(node: Hashable) -> None:
            self._run_action(actions[str(node)])

        walked = walk(
            graph,
            run_one,
            parallelism=self.parallelism,
            skip=skip,
            priority=lambda n: order[str(n)],
        )
        result = ApplyResult()
        for node, exc in walked.errors.items():
            a = actions[str(node)]
            if a.endpoint is None:
                result.global_errors.append(f"{a.id}: {exc}")
        for change in self.plan.changes:
            if change.kind is Change.NOOP:
                continue
            name = change.name
            mine = [a for a in self.plan.actions if a.endpoint == name]
            bad = [a for a in mine if walked.outcomes.get(a.id) is not Outcome.OK]
            if name not in self._failed and bad:
                failed = next(
                    (a for a in bad if walked.outcomes.get(a.id) is Outcome.FAILED), bad[0]
                )
                why = walked.errors.get(failed.id)
                self._failed[name] = str(why) if why else _blocked_reason(failed, walked, actions)
            if name in self._failed:
                self._undo(name, change.kind)
                result.endpoints.append(
                    EndpointOutcome(name, change.kind, False, self._failed[name])
                )
            else:
                self._finish(name, change.kind)
                result.endpoints.append(EndpointOutcome(name, change.kind, True))
        result.seconds = time.monotonic() - started
        return result

    def _run_action(self, action: Action) -> None:
        t0 = time.monotonic()
        self.print(f"{action.id}: {action.summary}...")
        if action.endpoint is not None:
            with self._lock:
                self._ran.setdefault(action.endpoint, []).append(action)
        try:
            if action.endpoint is not None:
                self._begin(action.endpoint)
                self._check_deadline(action.endpoint)
            handler = getattr(self, f"_do_{action.kind.name.lower()}")
            handler(action)
        except Exception as exc:
            if action.endpoint is not None:
                with self._lock:
                    self._failed.setdefault(action.endpoint, str(exc))
            self.print(f"{action.id}: failed after {time.monotonic() - t0:.1f}s")
            raise
        if action.endpoint is not None:
            with self._lock:
                self._done.setdefault(action.endpoint, []).append(action)
        self.print(f"{action.id}: done after {time.monotonic() - t0:.1f}s")

    def _begin(self, name: str) -> None:
        with self._lock:
            if name in self._begun:
                return
            self._begun.add(name)
            self._started_at[name] = time.monotonic()
            change = self._changes[name]
            if _refresh_only(change):
                return
            pending = change.after.spec if change.after else None
            self._update(
                name,
                lambda r: replace(r, config_update=IN_PROGRESS, message="", pending=pending),
            )
        self._push_best_effort()  # the management API shows IN_PROGRESS

    def _finish(self, name: str, kind: Change) -> None:
        if _refresh_only(self._changes[name]):
            return
        if kind is Change.DELETE:
            with self._lock:
                self._commit(self.state.without_endpoint(name))
        else:
            self._update(
                name,
                lambda r: replace(
                    r,
                    config_update=NOT_UPDATING,
                    message="",
                    pending=None,
                    config_version=r.config_version + 1,
                ),
            )
        self._push_best_effort()

    def _undo(self, name: str, kind: Change) -> None:
        """Reverse the endpoint's finished actions, newest first; record UPDATE_FAILED.

        Traffic goes back to what served before (the snapshot taken at the first shift or
        switch), then the replicas this run started are stopped. Once draining or stopping
        the old replicas has begun, they cannot take traffic back: a failure from then on
        rolls forward instead, leaving the rest to the next plan.
        """
        ran = self._ran.get(name, [])
        done = list(reversed(self._done.get(name, [])))
        if any(a.kind in (ActionKind.DRAIN, ActionKind.STOP_REPLICA) for a in ran):
            done = []
            self._failed[name] = "switched to the new config, but " + self._failed.get(name, "")
        restored = False
        for action in done:
            try:
                if action.kind is ActionKind.START_REPLICA:
                    handle = self._slots.get(str(action.payload["slot"]))
                    if handle is not None:
                        self.print(f"{action.id}: undo: stopping {handle.id}")
                        self._stop_handle(name, handle)
                elif (
                    action.kind in (ActionKind.SET_ROUTES, ActionKind.SHIFT_TRAFFIC)
                    and name in self._route_snapshots
                    and not restored
                ):
                    old = self._route_snapshots[name]
                    self.print(f"{action.id}: undo: all traffic back to what served before")

                    def restore(r: EndpointRecord, old: EndpointRecord = old) -> EndpointRecord:
                        return replace(
                            r,
                            spec=old.spec,
                            models=old.models,
                            routes=old.routes,
                            serving=old.serving,
                            split=old.split,
                            replicas=_merge_flags(r.replicas, old.replicas),
                        )

                    self._update(name, restore)
                    self._push_table(required=True)
                    restored = True
            except Exception as exc:  # keep undoing the rest
                self.print(f"{action.id}: undo failed: {exc}")
        message = self._failed.get(name, "")
        if name in self.state.endpoints:
            self._update(
                name,
                lambda r: replace(r, config_update=UPDATE_FAILED, message=message, pending=None),
            )
        self._push_best_effort()

    # -- handlers ------------------------------------------------------------------------

    def _do_start_gateway(self, action: Action) -> None:
        cfg = self.project.config
        start_gateway(
            cfg.state_dir,
            host=cfg.gateway_host,
            port=cfg.gateway_port,
            auth_token=self.project.gateway_token(),
            max_body_bytes=cfg.gateway_max_body_bytes,
            queue_timeout=cfg.gateway_queue_timeout_seconds,
        )
        with self._lock:
            self._commit(
                replace(
                    self.state,
                    gateway=GatewayRecordState(
                        cfg.gateway_host, cfg.gateway_port, str(action.payload["settings_hash"])
                    ),
                )
            )
        self._push_table(required=True)

    def _do_stop_gateway(self, action: Action) -> None:
        stop_gateway(self.project.config.state_dir)
        with self._lock:
            self._commit(replace(self.state, gateway=None))

    def _do_build(self, action: Action) -> None:
        provider = self.project.provider(str(action.payload["provider"]))
        provider.build(
            ResolvedModel.from_json(action.payload["model"]), str(action.payload["workload_type"])
        )

    def _do_start_replica(self, action: Action) -> None:
        spec = ReplicaSpec.from_json(action.payload["replica_spec"])
        spec = replace(
            spec,
            model_env=self.project.resolver.model_env,
            environment_vars=secrets.resolve(spec.environment_vars, self.project.environ),
        )
        provider = self.project.provider(self._changes[spec.endpoint].provider)
        handle = provider.start_replica(spec)
        with self._lock:
            self._slots[str(action.payload["slot"])] = handle
            self._update(
                spec.endpoint,
                lambda r: replace(r, replicas=(*r.replicas, ReplicaRecord(handle, spec.index))),
            )

    def _do_await_ready(self, action: Action) -> None:
        handle = self._slots[str(action.payload["slot"])]
        provider = self.project.provider(handle.provider)
        model = ResolvedModel.from_json(action.payload["model"])

        def alive() -> tuple[bool, str]:
            status = provider.status(handle)
            return status.liveness is Liveness.ALIVE, status.reason

        await_ready(
            handle,
            load_input_example(model),
            alive,
            lambda: provider.logs(handle, 30),
            timeout_seconds=self.project.config.ready_timeout_seconds,
        )
        self._update(
            handle.endpoint,
            lambda r: replace(
                r,
                replicas=tuple(
                    replace(x, ready=True) if x.id == handle.id else x for x in r.replicas
                ),
            ),
        )

    def _do_set_routes(self, action: Action) -> None:
        name = str(action.endpoint)
        p = action.payload
        spec = EndpointSpec.from_json(p["spec"])
        models = {k: ResolvedModel.from_json(v) for k, v in p["models"].items()}
        retire = set(p["retire"])
        forget = set(p["forget"])
        with self._lock:
            before = self.state.endpoint(name, spec.provider)
            self._route_snapshots.setdefault(name, before)
            after = replace(
                before,
                provider=spec.provider,
                spec=spec,
                models=models,
                routes=spec.routes,
                serving=dict(p["serving"]),
                split=(),
                replicas=tuple(
                    replace(x, retired=True) if x.id in retire else x
                    for x in before.replicas
                    if x.id not in forget
                ),
            )
            candidate = self.state.with_endpoint(after)
            client = self.project.gateway_client()
            if client is None:
                raise GatewayError("the gateway is not running, so routes cannot be switched")
            with client:
                client.put_table(routing_table(candidate))
            self._commit(candidate)

    def _do_shift_traffic(self, action: Action) -> None:
        name = str(action.endpoint)
        split = tuple((str(e), str(g), int(p)) for e, g, p in action.payload["split"])
        with self._lock:
            before = self.state.endpoints[name]
            self._route_snapshots.setdefault(name, before)
            candidate = self.state.with_endpoint(replace(before, split=split))
            client = self.project.gateway_client()
            if client is None:
                raise GatewayError("the gateway is not running, so traffic cannot be shifted")
            with client:
                client.put_table(routing_table(candidate))
            self._commit(candidate)

    def _do_bake(self, action: Action) -> None:
        """Watch the new targets for `seconds`; a tripped guard raises (and so rolls back)."""
        name = str(action.endpoint)
        p = action.payload
        guards = Guards.from_json(p["guards"])
        seconds = float(p["seconds"])
        watch = [(str(e), str(g)) for e, g in p["watch"]]
        label = f"step {p['step']}/{p['of']}"
        since = time.time()
        deadline = time.monotonic() + seconds
        figures: dict[str, Any] = {}
        while True:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            self._check_deadline(name)
            figures = self._watch_figures(name, watch, since)
            verdict = judge(guards, figures)
            if verdict:
                raise RolloutGuardError(f"rollout guard tripped at {label}: {verdict}")
            if time.monotonic() >= deadline:
                break
        summary = "; ".join(
            f"{key}: {f['requests']} requests, {f['errors']} errors, p99 {f['p99_ms']:.0f} ms"
            for key, f in figures.items()
        )
        self.print(f"{action.id}: guards pass at {label} ({summary or 'no requests'})")

    def _watch_figures(
        self, name: str, watch: list[tuple[str, str]], since: float
    ) -> dict[str, dict[str, Any]]:
        """The gateway's figures since `since` for each watched (entity, generation)."""
        client = self.project.gateway_client()
        if client is None:
            raise GatewayError("the gateway stopped during the bake")
        with client:
            metrics = client.metrics(since)
        with self._lock:
            traffic = self.state.endpoints[name].traffic()
        entities = metrics.get("endpoints", {}).get(name, {}).get("entities", {})
        out: dict[str, dict[str, Any]] = {}
        for entity, generation in watch:
            key = target_key(traffic, entity, generation)
            m = entities.get(key, {})
            out[entity] = {
                "requests": int(m.get("requests", 0)),
                "errors": int(m.get("errors", 0)),
                "error_rate": float(m.get("error_rate") or 0.0),
                "p99_ms": float(m.get("p99_ms") or 0.0),
            }
        return out

    def _check_deadline(self, name: str) -> None:
        change = self._changes.get(name)
        if change is None or change.after is None:
            return
        policy = change.after.spec.rollout
        started = self._started_at.get(name)
        if policy.deadline_seconds is None or started is None:
            return
        spent = time.monotonic() - started
        if spent > policy.deadline_seconds:
            raise RolloutGuardError(
                f"rollout deadline passed: {spent:.0f}s spent, deadline_seconds is "
                f"{policy.deadline_seconds:g}"
            )

    def _do_remove_routes(self, action: Action) -> None:
        name = str(action.endpoint)
        self._update(name, lambda r: replace(r, routes=(), serving={}))
        self._push_table(required=False)

    def _do_drain(self, action: Action) -> None:
        client = self.project.gateway_client()
        if client is None:
            return  # no gateway: nothing can be in flight through it
        ids = [str(x) for x in action.payload["replica_ids"]]
        with client:
            drained = client.drain(ids, self.project.config.drain_timeout_seconds)
        if not drained:
            self.print(
                f"{action.id}: requests still in flight after "
                f"{self.project.config.drain_timeout_seconds:.0f} s; stopping anyway"
            )

    def _stop_handle(self, endpoint: str | None, handle: ReplicaHandle) -> None:
        self.project.provider(handle.provider).stop_replica(handle, grace_seconds=10.0)
        if endpoint is not None and endpoint in self.state.endpoints:
            self._update(
                endpoint,
                lambda r: replace(r, replicas=tuple(x for x in r.replicas if x.id != handle.id)),
            )

    def _do_stop_replica(self, action: Action) -> None:
        self._stop_handle(action.endpoint, ReplicaHandle.from_json(action.payload["handle"]))

    def _do_forget_replica(self, action: Action) -> None:
        self._stop_handle(action.endpoint, ReplicaHandle.from_json(action.payload["handle"]))

    def _do_stop_orphan(self, action: Action) -> None:
        handle = ReplicaHandle.from_json(action.payload["handle"])
        self.project.provider(handle.provider).stop_replica(handle, grace_seconds=5.0)


def _refresh_only(change: EndpointChange) -> bool:
    """A refresh-only update: it forgets dead replicas and leaves the config and status."""
    return change.kind is Change.UPDATE and change.after is None


def judge(guards: Guards, figures: Mapping[str, Mapping[str, Any]]) -> str:
    """Why the figures trip a guard ('' when they do not). Judged only past min_requests."""
    for entity, f in figures.items():
        if f["requests"] < guards.min_requests:
            continue
        if guards.max_error_rate is not None and f["error_rate"] > guards.max_error_rate:
            return (
                f"{entity} error rate {f['error_rate']:.3f} ({f['errors']} of {f['requests']} "
                f"requests) > max_error_rate {guards.max_error_rate:g}"
            )
        if guards.max_p99_latency_ms is not None and f["p99_ms"] > guards.max_p99_latency_ms:
            return (
                f"{entity} p99 latency {f['p99_ms']:.0f} ms over {f['requests']} requests > "
                f"max_p99_latency_ms {guards.max_p99_latency_ms:g}"
            )
    return ""


def _merge_flags(
    current: tuple[ReplicaRecord, ...], old: tuple[ReplicaRecord, ...]
) -> tuple[ReplicaRecord, ...]:
    """Current replicas with the rotation flags they had before a routing switch."""
    flags = {x.id: (x.ready, x.retired) for x in old}
    return tuple(
        replace(x, ready=flags[x.id][0], retired=flags[x.id][1]) if x.id in flags else x
        for x in current
    )


def _blocked_reason(failed: Action, walked: Any, actions: dict[str, Action]) -> str:
    for node, exc in walked.errors.items():
        if actions[str(node)].endpoint is None:
            return f"not applied because {node} failed: {exc}"
    return f"{failed.id} was not run"
