"""User-facing errors of declare, and the exit code each maps to.

Every error a user can cause (bad input, a busy lock, an unreachable engine) is a
`DeclareError`. The CLI catches `DeclareError` in one place, prints `str(error)` and exits
with `error.exit_code`; anything else is a bug and is shown as one.

    DeclareError                      exit 1
    ├── LocatedError                  one problem at a file/line/field
    ├── ManifestError                 all LocatedErrors of one load, reported together
    ├── ConfigError                   declare.yaml or the environment is unusable
    ├── ModelResolutionError          an MLflow model URI cannot be resolved
    ├── StateError                    the recorded state cannot be read or written
    │   ├── StateDocumentError        fields of a stored state are wrong (each located)
    │   ├── StateLockedError          another run holds the lock (names the holder)
    │   └── StaleStateError           a write would lose someone else's write
    ├── ProviderError                 a provider cannot do what it was asked
    │   └── ReplicaFailedError        a replica died or never answered (carries its log tail)
    ├── GatewayError                  the gateway cannot be started or reached
    ├── RuntimeStartError             the runtime (healing, autoscaling) cannot be started
    ├── RolloutGuardError             a rollout guard tripped or its deadline passed
    └── ApplyFailedError              apply finished with failed endpoints (already reported)

Errors say whether retrying can help (`retryable`), in kopf's manner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DeclareError(Exception):
    """Base of every error a user can cause; `str()` is the whole message."""

    exit_code: int = 1
    retryable: bool = False


@dataclass(frozen=True)
class Location:
    """Where a problem is: a file, a 1-based line (0 when unknown) and a field path."""

    file: str
    line: int = 0
    field: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}"
        if self.field:
            where += f": {self.field}"
        return where


class LocatedError(DeclareError):
    """One problem at a known place, with what is allowed there."""

    def __init__(self, location: Location, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


class ManifestError(DeclareError):
    """Every problem found in one load of the manifests, reported together."""

    def __init__(self, problems: Sequence[LocatedError]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the manifests:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class ConfigError(DeclareError):
    """declare.yaml, a CLI flag or the environment is unusable."""


class ModelResolutionError(DeclareError):
    """An MLflow model URI cannot be resolved to a model."""


class StateError(DeclareError):
    """The recorded state cannot be read or written."""


class StateDocumentError(StateError):
    """A stored state whose fields declare cannot read: every problem located at the state's
    place (file or database) and the field's JSON path, reported together."""

    def __init__(self, where: str, problems: Sequence[LocatedError], recovery: str) -> None:
        self.where = where
        self.problems = tuple(problems)
        count = len(self.problems)
        head = f"the state at {where} cannot be read: {count} problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems), recovery]))


class StateLockedError(StateError):
    """Another run holds the state lock."""

    retryable = True


class StaleStateError(StateError):
    """The state moved on since it was read."""


class ProviderError(DeclareError):
    """A provider cannot do what it was asked."""


class ReplicaFailedError(ProviderError):
    """A replica died or never became ready; the message carries its log tail."""


class GatewayError(DeclareError):
    """The gateway cannot be started or reached."""

    retryable = True


class RuntimeStartError(DeclareError):
    """The runtime process could not be started (its log's tail says why)."""


class RolloutGuardError(DeclareError):
    """A rollout guard tripped (with its figures) or the rollout's deadline passed."""


class ApplyFailedError(DeclareError):
    """Apply finished, but at least one endpoint failed (each already reported)."""
