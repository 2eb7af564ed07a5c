"""Where a replica's log and its environment's build log can be read without its provider.

A provider writes a `LogSource` into each `ReplicaHandle` it returns; the state records it,
`declare.routing` carries it into the routing table, and the gateway reads the log from
there (`GET .../served-models/{name}/logs` and `.../build-logs`), never asking the provider:
the gateway may not import one. The forms:

    {"file": "<path>"}                         a file the replica's output is appended to
    {"engine": "unix:///...", "container": "<id>"}   a container on a Docker engine
    "build": {"file": "<path>"}                the output of the build of its environment
    "build": {"text": "<one line>"}            what the provider says instead, when it built
                                               nothing for it (the local provider)

A handle recorded before providers wrote one has none (`ReplicaHandle.logs` is None).
Data only: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BuildLog", "LogSource"]


def _text(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key} must be a string")
    return value


@dataclass(frozen=True)
class BuildLog:
    """The build log of an entity's environment: a file, or a line saying why there is none."""

    file: str | None = None
    text: str | None = None

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("file", self.file), ("text", self.text)) if v is not None}

    @classmethod
    def from_json(cls, data: Any, where: str = "build") -> BuildLog:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be an object")
        return cls(_text(data, "file", where), _text(data, "text", where))


@dataclass(frozen=True)
class LogSource:
    """Where one replica's log is: a file, or a container on an engine; and its build log."""

    file: str | None = None
    engine: str | None = None  # the Docker engine's URL, as the provider reaches it
    container: str | None = None  # the container's id on that engine
    build: BuildLog | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("file", self.file),
                ("engine", self.engine),
                ("container", self.container),
            )
            if v is not None
        }
        if self.build is not None:
            out["build"] = self.build.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "logs") -> LogSource:
        """The source in `data`; ValueError saying what is wrong when it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be an object")
        build = data.get("build")
        return cls(
            _text(data, "file", where),
            _text(data, "engine", where),
            _text(data, "container", where),
            None if build is None else BuildLog.from_json(build, f"{where}.build"),
        )
