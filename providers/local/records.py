"""The local provider's replica records on disk: `state_dir/local/replicas/<replica id>.json`.

A record is written atomically (temp file + os.replace) right after its process starts, and
holds the labels (project, endpoint, entity, generation, index), the process identity (pid +
start time from /proc), the port, the log path and the pinned model URI: enough to list
every replica without the state file and to build its handle. Logs live beside, in
`state_dir/local/logs/<replica id>.log`, renamed `<replica id>.stopped.log` once stopped,
with a sidecar `<replica id>.stopped.json` (`providers._shared.record_stopped`) that tells
whose log it is once the record is gone.

What it does not do: start, inspect or signal processes (`providers.local.launch`,
`declare.procs`), or decide which records belong to the project (the provider filters).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from declare import procs
from declare.errors import ProviderError
from declare.model import BuildLog, LogSource, ReplicaHandle
from providers._shared import (
    StoppedRecord,
    exclusive,
    handle_from_labels,
    record_stopped,
    stopped_records,
)

__all__ = ["PROVIDER_NAME", "RECORD_FORMAT", "ReplicaRecord", "ReplicaRecords"]

PROVIDER_NAME = "local"
RECORD_FORMAT = 1
_REQUIRED = ("id", "labels", "process", "host", "port", "log", "model")
# What the gateway answers for a served entity's build log (`declare.model.logs`).
NOTHING_BUILT = (
    "nothing was built for this served model: the local provider runs models in declare's "
    "own Python environment (--env-manager local)"
)


@dataclass(frozen=True)
class ReplicaRecord:
    """One replica as its record file holds it."""

    id: str
    labels: Mapping[str, str]
    process: procs.ProcessId
    host: str
    port: int
    log: str
    pinned_uri: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "id": self.id,
            "provider": PROVIDER_NAME,
            "labels": dict(self.labels),
            "process": self.process.to_json(),
            "host": self.host,
            "port": self.port,
            "log": self.log,
            "model": {"pinned_uri": self.pinned_uri, "source": self.source},
        }

    @classmethod
    def from_json(cls, data: object) -> ReplicaRecord:
        """The record in `data`; ValueError saying what is wrong when it is not one."""
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError("not a replica record of this declare version")
        for key in _REQUIRED:
            if key not in data:
                raise ValueError(f"no {key!r}")
        try:
            return cls(
                id=data["id"],
                labels=dict(data["labels"]),
                process=procs.ProcessId.from_json(data["process"]),
                host=data["host"],
                port=int(data["port"]),
                log=data["log"],
                pinned_uri=data["model"]["pinned_uri"],
                source=data["model"].get("source", ""),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed: {exc!r}") from exc

    @property
    def project(self) -> str | None:
        return self.labels.get("declare.project")

    def handle(self) -> ReplicaHandle:
        """The replica's handle: its URL, and its process identity, port, log and labels;
        its log source is the log file (the gateway reads it there)."""
        return handle_from_labels(
            PROVIDER_NAME,
            self.id,
            self.labels,
            self.host,
            self.port,
            {
                "pid": self.process.pid,
                "start_time": self.process.start_time,
                "port": self.port,
                "log": self.log,
                "labels": dict(self.labels),
                "model_uri": self.pinned_uri,
            },
            LogSource(file=self.log, build=BuildLog(text=NOTHING_BUILT)),
        )


class ReplicaRecords:
    """The record and log folders under `root` (state_dir/local), and the lock guarding them."""

    def __init__(self, root: Path) -> None:
        self.records_dir = root / "replicas"
        self.logs_dir = root / "logs"
        self._lock_path = root / ".lock"

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the records' lock (against other threads and other declare processes)."""
        return exclusive(self._lock_path)

    def log_path(self, replica_id: str) -> Path:
        return self.logs_dir / f"{replica_id}.log"

    def read(self) -> list[ReplicaRecord]:
        """Every record, sorted by file name; ProviderError naming an unreadable one."""
        return list(self._read())

    def _read(self) -> Iterator[ReplicaRecord]:
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = ReplicaRecord.from_json(json.loads(path.read_text()))
            except FileNotFoundError:
                continue  # stopped while we listed
            except (OSError, ValueError) as exc:
                raise ProviderError(
                    f"local replica record {path} is unreadable ({exc}); if its process is "
                    "gone, delete the file"
                ) from exc
            yield record

    def write(self, record: ReplicaRecord) -> None:
        """Write `record` atomically (temp file, fsync, rename)."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        path = self.records_dir / f"{record.id}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(record.to_json(), f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def forget(self, handle: ReplicaHandle) -> None:
        """Remove the replica's record and keep its log as `<id>.stopped.log`. Idempotent."""
        with contextlib.suppress(FileNotFoundError):
            (self.records_dir / f"{handle.id}.json").unlink()
        log_path = self.log_of(handle)
        if log_path.exists():
            stopped = self.stopped_log_of(handle)
            os.replace(log_path, stopped)
            record_stopped(stopped.parent, handle)

    def stopped(self) -> list[StoppedRecord]:
        """Every kept log of a stopped replica that has a sidecar, newest stop first."""
        return stopped_records(self.logs_dir, lambda rid: self.logs_dir / f"{rid}.stopped.log")

    def log_of(self, handle: ReplicaHandle) -> Path:
        """The log its handle names (the default place for handles that name none)."""
        recorded = handle.data.get("log")
        return Path(recorded) if recorded else self.log_path(handle.id)

    def stopped_log_of(self, handle: ReplicaHandle) -> Path:
        return self.log_of(handle).with_name(f"{handle.id}.stopped.log")
