"""The fake provider: an in-memory Provider for fast tests of planning and apply logic.

Nothing runs: a replica is an entry in a table, its URL is `http://127.0.0.1:0` (nothing
listens there), and it stays ALIVE until it is stopped or a test calls `kill(handle_id)`.
It keeps the Provider contract the local provider keeps (the shared conformance tests run
against both): handles carry labels, `list_owned()` finds replicas without any state file,
`status` never mistakes an unknown or stopped handle for a live one, `stop_replica` is
idempotent.

Replicas live in a "world" shared by every FakeProvider built with the same `state_dir`
in this Python process, the way real processes outlive one `declare` run: a second
instance (a later `plan`) sees what the first one started. Nothing is written to disk.

Knobs for tests:
    fail_start   set of model pinned URIs whose start raises ProviderError (also settable
                 as the `fail_start` list in declare.yaml's `providers.fake`)
    fail_build   set of env hashes whose build raises ProviderError (`fail_build` setting)
    fail_stop    set of model pinned URIs whose replicas' stop raises ProviderError (the
                 replica keeps running; `fail_stop` setting)
    kill(id)     simulate the death of a replica (status DEAD with the given reason)
    calls        the call log: every Protocol call as a `Call(op, target)`, in order

Builds behave like an image-building provider's: every model environment needs one
(`BuildInfo.needed` is True), and it is cached in the world once built.

What it does not do: readiness (no HTTP server answers), workload types (every type is
accepted), logs beyond a few lines it writes itself.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from declare.errors import ConfigError, ProviderError
from declare.model import ReplicaHandle, ReplicaSpec, ResolvedModel
from declare.provider import BuildInfo, Liveness, ProviderContext, ReplicaStatus

__all__ = ["Call", "FakeProvider", "reset_worlds"]

PROVIDER_NAME = "fake"
FAKE_URL = "http://127.0.0.1:0"
_ALLOWED_SETTINGS = ("fail_start", "fail_build", "fail_stop")


@dataclass(frozen=True)
class Call:
    """One call made to the fake provider: the operation and what it was about."""

    op: str  # check, build_info, build, start_replica, status, stop_replica, list_owned, logs
    target: str = ""  # a handle id, a pinned model URI or an env hash


@dataclass
class _Replica:
    handle: ReplicaHandle
    project: str
    alive: bool = True
    reason: str = ""
    log: list[str] = field(default_factory=list)


@dataclass
class _World:
    """What "runs" for one state_dir: replicas by id, finished builds, a serial counter."""

    replicas: dict[str, _Replica] = field(default_factory=dict)
    stopped_logs: dict[str, list[str]] = field(default_factory=dict)
    built: set[str] = field(default_factory=set)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)


_WORLDS: dict[Path, _World] = {}
_WORLDS_GUARD = threading.Lock()


def _world_for(state_dir: Path) -> _World:
    key = state_dir.absolute()
    with _WORLDS_GUARD:
        return _WORLDS.setdefault(key, _World())


def _string_set(raw: Any, name: str) -> set[str]:
    if raw is None:
        return set()
    if isinstance(raw, str) or not isinstance(raw, Iterable):
        raise ConfigError(f"providers.fake.{name}: must be a list of strings, got {raw!r}")
    return {str(item) for item in raw}


class FakeProvider:
    """An in-memory Provider (see module doc)."""

    name = PROVIDER_NAME
    replica_concurrency = 4

    def __init__(
        self,
        context: ProviderContext,
        *,
        fail_start: Iterable[str] = (),
        fail_build: Iterable[str] = (),
        fail_stop: Iterable[str] = (),
    ) -> None:
        unknown = sorted(set(context.settings) - set(_ALLOWED_SETTINGS))
        if unknown:
            raise ConfigError(
                f"providers.fake: unknown setting {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(_ALLOWED_SETTINGS)}"
            )
        self.context = context
        self.fail_start: set[str] = set(fail_start) | _string_set(
            context.settings.get("fail_start"), "fail_start"
        )
        self.fail_build: set[str] = set(fail_build) | _string_set(
            context.settings.get("fail_build"), "fail_build"
        )
        self.fail_stop: set[str] = set(fail_stop) | _string_set(
            context.settings.get("fail_stop"), "fail_stop"
        )
        self._world = _world_for(context.state_dir)
        self._calls: list[Call] = []
        self._calls_lock = threading.Lock()

    # -- test knobs -------------------------------------------------------------------------

    @property
    def calls(self) -> tuple[Call, ...]:
        """Every call made through this instance, in order."""
        with self._calls_lock:
            return tuple(self._calls)

    def ops(self, op: str) -> tuple[str, ...]:
        """The targets of every call of one operation, in order (e.g. ops('stop_replica'))."""
        return tuple(c.target for c in self.calls if c.op == op)

    def clear_calls(self) -> None:
        with self._calls_lock:
            self._calls.clear()

    def kill(self, handle_id: str, reason: str = "killed by the test") -> None:
        """Simulate the replica's death: status becomes DEAD with `reason`; it stays listed."""
        with self._world.lock:
            replica = self._world.replicas.get(handle_id)
            if replica is None:
                raise KeyError(f"no fake replica {handle_id!r}")
            replica.alive = False
            replica.reason = reason
            replica.log.append(f"died: {reason}")

    def alive_ids(self) -> tuple[str, ...]:
        """Ids of the replicas of this project that are alive now, sorted."""
        with self._world.lock:
            return tuple(
                sorted(
                    rid
                    for rid, r in self._world.replicas.items()
                    if r.alive and r.project == self.context.project
                )
            )

    # -- the Provider Protocol --------------------------------------------------------------

    def check(self) -> None:
        self._log("check")

    def build_info(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        self._log("build_info", model.env_hash)
        with self._world.lock:
            cached = model.env_hash in self._world.built
        return BuildInfo(key=model.env_hash, needed=True, cached=cached, ref=self._ref(model))

    def build(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        self._log("build", model.env_hash)
        if model.env_hash in self.fail_build:
            raise ProviderError(f"fake build of environment {model.env_hash} failed (fail_build)")
        with self._world.lock:
            self._world.built.add(model.env_hash)
        return BuildInfo(key=model.env_hash, needed=True, cached=True, ref=self._ref(model))

    def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        self._log("start_replica", spec.model.pinned_uri)
        if spec.model.pinned_uri in self.fail_start:
            raise ProviderError(
                f"endpoint {spec.endpoint!r}, served entity {spec.entity!r}: fake start of "
                f"{spec.model.pinned_uri} failed (fail_start)"
            )
        with self._world.lock:
            serial = next(self._world.counter)
            replica_id = f"{spec.endpoint}-{spec.entity}-{serial:06x}"
            handle = ReplicaHandle(
                id=replica_id,
                provider=PROVIDER_NAME,
                endpoint=spec.endpoint,
                entity=spec.entity,
                generation=spec.generation,
                url=FAKE_URL,
                data={"labels": spec.labels, "model_uri": spec.model.pinned_uri},
            )
            self._world.replicas[replica_id] = _Replica(
                handle=handle,
                project=spec.project,
                log=[f"started {spec.model.pinned_uri} as {replica_id}"],
            )
        return handle

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        self._log("status", handle.id)
        with self._world.lock:
            replica = self._world.replicas.get(handle.id)
            if replica is None:
                return ReplicaStatus(handle, Liveness.DEAD, "no such fake replica (stopped)")
            if not replica.alive:
                return ReplicaStatus(handle, Liveness.DEAD, replica.reason)
            return ReplicaStatus(handle, Liveness.ALIVE)

    def stop_replica(self, handle: ReplicaHandle, grace_seconds: float) -> None:
        self._log("stop_replica", handle.id)
        if handle.data.get("model_uri") in self.fail_stop:
            raise ProviderError(f"fake stop of replica {handle.id} failed (fail_stop)")
        with self._world.lock:
            replica = self._world.replicas.pop(handle.id, None)
            if replica is not None:  # keep its log, as the local provider keeps log files
                self._world.stopped_logs[handle.id] = [*replica.log, "stopped"]

    def list_owned(self) -> Sequence[ReplicaHandle]:
        self._log("list_owned")
        with self._world.lock:
            return sorted(
                (
                    r.handle
                    for r in self._world.replicas.values()
                    if r.project == self.context.project
                ),
                key=lambda h: h.id,
            )

    def logs(self, handle: ReplicaHandle, tail: int = 50) -> str:
        self._log("logs", handle.id)
        with self._world.lock:
            replica = self._world.replicas.get(handle.id)
            lines = list(replica.log) if replica else self._world.stopped_logs.get(handle.id, [])
        return "\n".join(lines[-tail:] if tail > 0 else [])

    # -- internals --------------------------------------------------------------------------

    def _log(self, op: str, target: str = "") -> None:
        with self._calls_lock:
            self._calls.append(Call(op, target))

    @staticmethod
    def _ref(model: ResolvedModel) -> str:
        return f"fake/{model.env_hash or 'noenv'}"


def reset_worlds(state_dirs: Iterable[Path] | None = None) -> None:
    """Forget every fake world (or those of `state_dirs`): for test isolation."""
    with _WORLDS_GUARD:
        if state_dirs is None:
            _WORLDS.clear()
        else:
            for path in state_dirs:
                _WORLDS.pop(path.absolute(), None)
