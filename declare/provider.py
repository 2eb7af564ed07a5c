"""The provider boundary: one Protocol that every provider (local, docker, gpu hosts) meets.

A provider runs replicas and tells what runs. It never reads manifests or the state file;
it receives `ReplicaSpec`s and returns `ReplicaHandle`s, and finds what it owns by its own
labels (process records, container labels). Readiness by a real prediction is done by the
core over HTTP (`declare.readiness`); a provider only says whether a replica is alive.

Providers are found through the `declare.providers` entry-point group (see pyproject.toml),
each entry a class taking a `ProviderContext`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from declare.errors import ConfigError
from declare.model import EntitySpec, ReplicaHandle, ReplicaSpec, ResolvedModel


class Liveness(Enum):
    ALIVE = "alive"  # the replica's process/container runs
    DEAD = "dead"  # it ran once and does not now (exited, killed, removed)


@dataclass(frozen=True)
class ReplicaStatus:
    handle: ReplicaHandle
    liveness: Liveness
    reason: str = ""  # why it is dead (exit code, signal), for drift messages


@dataclass(frozen=True)
class BuildInfo:
    """What a provider would build for a model environment, and whether it is cached."""

    key: str  # content hash; entities with equal keys share one build
    needed: bool  # False: this provider serves without a build step (local)
    cached: bool  # True: already built, the build action does nothing
    ref: str = ""  # e.g. an image tag
    kind: str = "image"  # what is built, as the plan names it: image, environment


@dataclass(frozen=True)
class ProviderContext:
    """Everything a provider may know of the project: no manifests, no state."""

    project: str  # project name (folder name), used in labels
    project_dir: Path
    state_dir: Path  # providers keep their own records and logs under state_dir/<provider>
    settings: Mapping[str, Any] = field(default_factory=dict)  # declare.yaml providers.<name>


@runtime_checkable
class Provider(Protocol):
    name: str

    def check(self) -> None:
        """Raise ProviderError (or ConfigError) when this provider cannot work at all."""

    def build_info(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """What serving this model needs built, and whether that is already done."""

    def build(self, model: ResolvedModel, workload_type: str) -> BuildInfo:
        """Build what `build_info` said is needed; return the finished build's info."""

    def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Start one replica, detached, and return at once (readiness is awaited elsewhere)."""

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        """Is this replica alive? Must never mistake a reused PID/id for the replica."""

    def stop_replica(self, handle: ReplicaHandle, grace_seconds: float) -> None:
        """Stop the replica (graceful, then forced) and forget it. Idempotent."""

    def list_owned(self) -> Sequence[ReplicaHandle]:
        """Every replica this provider holds for the project, found by its own labels."""

    def logs(self, handle: ReplicaHandle, tail: int = 50) -> str:
        """The last `tail` lines of the replica's log."""


@runtime_checkable
class ReplicaSizing(Protocol):
    """Optional: how many concurrent requests one replica of this provider serves (a
    provider setting, `replica_concurrency`; 4 when a provider does not say: one MLflow
    scoring-server worker, and Databricks' 4 units of concurrency per replica)."""

    replica_concurrency: int


def replica_concurrency(provider: Provider) -> int:
    if isinstance(provider, ReplicaSizing):
        return int(provider.replica_concurrency)
    return 4


@runtime_checkable
class EntityChecks(Protocol):
    """Optional: a provider that cannot serve some settings of a served entity says so before
    anything starts. `plan` and `apply` call it for every entity a manifest gives the
    provider, and refuse the manifest with each problem at the entity's line."""

    def entity_problems(self, entity: EntitySpec) -> list[tuple[str, str]]:
        """(field, message) for each setting of `entity` this provider cannot serve."""


@runtime_checkable
class ImagePruning(Protocol):
    """Optional: a provider that builds images can remove those the project used.

    `declare destroy --prune-images` calls it after a successful destroy, on every provider
    of the project that has it; providers without images (local, fake) simply lack it.
    """

    def prune_images(self) -> list[str]:
        """Remove the images this project used that nothing uses now; return their names."""


@runtime_checkable
class HelperProcesses(Protocol):
    """Optional: a provider that runs helper processes of its own (the local provider's
    fork server). `declare destroy` calls it when the destroy left the provider no replica
    of the project."""

    def stop_helpers(self) -> None:
        """Stop this project's helper processes; replicas are not touched. Idempotent."""


@dataclass(frozen=True)
class StoppedLog:
    """The log a provider kept of one replica it stopped."""

    replica_id: str
    entity: str
    stopped_at: float | None  # epoch seconds, when the provider knows it
    text: str  # its last lines


@runtime_checkable
class StoppedLogs(Protocol):
    """Optional: a provider that keeps the logs of the replicas it stopped (replaced, scaled
    in, or undone by a failed apply) can list them by endpoint. `declare logs` shows them
    when no replica of the endpoint (or entity) is recorded, or runs now."""

    def stopped_logs(self, endpoint: str, entity: str | None, tail: int) -> list[StoppedLog]:
        """The kept logs of `endpoint`'s stopped replicas (of `entity`, unless None), the
        last `tail` lines of each, newest stop first."""


@runtime_checkable
class LogFollowing(Protocol):
    """Optional: a provider whose running replicas' logs can be read on as they grow
    (`declare logs --follow`)."""

    def log_size(self, handle: ReplicaHandle) -> int:
        """How many bytes the replica's log holds now (0 when it has none yet)."""

    def log_since(self, handle: ReplicaHandle, offset: int) -> tuple[str, int]:
        """The log's text after byte `offset` (whole lines only) and the offset to read on
        from; ('', offset) when nothing new was written."""


def load_provider(name: str, context: ProviderContext) -> Provider:
    """Instantiate the provider registered under `name` in the entry-point group."""
    for ep in entry_points(group="declare.providers"):
        if ep.name == name:
            cls = ep.load()
            provider: Provider = cls(context)
            return provider
    known = sorted(ep.name for ep in entry_points(group="declare.providers"))
    raise ConfigError(f"unknown provider {name!r}; installed providers: {', '.join(known)}")
