"""What every process-owning provider (local, docker) needs alike, kept in one place.

In the manner of pre-commit's lang_base.py: the helpers the plugins share live beside the
Provider Protocol (`declare.provider`), not copied into each plugin.

- `exclusive(path)` serializes work guarded by a lock file (replica records, a wheel-cache
  entry) between threads of one declare and between declare processes (a thread lock per
  file, then flock on it). `loopback_host(value, field, why)` checks a configured address.
- Replica naming: `new_replica_id` (`<endpoint>-<entity>-<6 hex>`, avoiding taken ids; its
  form and length limit, and `sanitize_id`, are `declare.model.names`'), `where_of` (how
  messages name a spec's endpoint and entity), `pick_port`.
- Replica handles: `handle_from_labels` builds a `ReplicaHandle` from the `declare.*` labels
  a provider recorded; `check_owner` refuses another provider's handle.
- Death reasons: `last_error_line` of a replica's log, `death_reason` appending it.
- Kept logs of stopped replicas: `record_stopped` writes a sidecar `<id>.stopped.json`
  (project, endpoint, entity, stop time) beside the kept log, `stopped_records` reads them
  back newest first (endpoint names may hold '-', so a replica id alone cannot say whose).
- Model sources: `is_local_source`, `local_source_path` (a path or a file: URI).

What it does not do: start, inspect or stop anything; it knows no process, container or
record format of any provider.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from declare import procs
from declare.errors import ConfigError, ProviderError
from declare.model import (
    LogSource,
    ReplicaHandle,
    ReplicaSpec,
    replica_id_problem,
    replica_id_stem,
    sanitize_id,
)

__all__ = [
    "StoppedRecord",
    "check_owner",
    "death_reason",
    "exclusive",
    "handle_from_labels",
    "is_local_source",
    "last_error_line",
    "local_source_path",
    "loopback_host",
    "new_replica_id",
    "pick_port",
    "record_stopped",
    "replica_concurrency_setting",
    "sanitize_id",
    "stopped_records",
    "where_of",
]

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
# Lines of a replica log that name the error that killed it (for DEAD reasons).
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:? ?")
# The MLflow launcher's own closing line when uvicorn failed: says nothing about why.
_LAUNCHER_LINE = re.compile(r"^Exception: Command .* returned non zero return code")
# How many lines of a replica's log a death reason looks through.
DEATH_LOG_LINES = 200


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold `lock_path` exclusively: against other threads here, and other processes (flock)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    key = str(lock_path.resolve())
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with thread_lock, open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def loopback_host(host: object, field: str, why: str) -> str:
    """`host` as an IPv4 loopback address ('localhost' becomes 127.0.0.1), or a ConfigError
    that names `field` and says `why` only loopback is allowed."""
    if not isinstance(host, str):
        raise ConfigError(f"{field}: must be a string, got {host!r}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if not isinstance(address, ipaddress.IPv4Address) or not address.is_loopback:
        raise ConfigError(
            f"{field}: {host!r} is not an IPv4 loopback address; {why} (e.g. 127.0.0.1)"
        )
    return host


# -- replica naming ----------------------------------------------------------------------------


def new_replica_id(spec: ReplicaSpec, taken: Collection[str | None]) -> str:
    """A fresh replica id, `<endpoint>-<entity>-<6 hex>` sanitized, that is not in `taken`.

    ProviderError when the ids of this endpoint and entity are longer than REPLICA_ID_MAX
    (`declare.model.names`: what every provider's file and container names are made for);
    validate refuses such names, so this only meets names that bypassed it.
    """
    problem = replica_id_problem(spec.endpoint, spec.entity)
    if problem:
        raise ProviderError(f"{where_of(spec)}: {problem}")
    stem = replica_id_stem(spec.endpoint, spec.entity)
    while True:
        candidate = f"{stem}-{secrets.token_hex(3)}"
        if candidate not in taken:
            return candidate


def where_of(spec: ReplicaSpec) -> str:
    """How messages about starting `spec` begin: its endpoint and served entity."""
    return f"endpoint {spec.endpoint!r}, served entity {spec.entity!r}"


def pick_port(host: str, taken: frozenset[int], where: str) -> int:
    """A free port on `host`, none of `taken`; ProviderError beginning with `where` if none."""
    try:
        return procs.free_port(host, exclude=taken)
    except OSError as exc:
        raise ProviderError(f"{where}: no free port on {host}") from exc


# -- replica handles ---------------------------------------------------------------------------


def handle_from_labels(
    provider: str,
    replica_id: str,
    labels: Mapping[str, str],
    host: str,
    port: int,
    data: Mapping[str, Any],
    logs: LogSource | None = None,
) -> ReplicaHandle:
    """The handle of a replica listening on `host:port`, named by its `declare.*` labels;
    `logs` where the gateway reads its log and build log."""
    return ReplicaHandle(
        id=replica_id,
        provider=provider,
        endpoint=labels["declare.endpoint"],
        entity=labels["declare.entity"],
        generation=labels["declare.generation"],
        url=f"http://{host}:{port}",
        data=data,
        logs=logs,
    )


def check_owner(handle: ReplicaHandle, provider: str) -> None:
    """Raise ProviderError unless `handle` names a replica of `provider`."""
    if handle.provider != provider:
        raise ProviderError(
            f"replica {handle.id} belongs to provider {handle.provider!r}, not {provider!r}"
        )


# -- death reasons -----------------------------------------------------------------------------


def last_error_line(log: str) -> str:
    """The last line of a replica's log that names an error (at most 300 characters), else ''.

    The MLflow launcher's closing "Exception: Command ... returned non zero return code"
    says nothing about why, so the error before it is the one named.
    """
    for line in reversed(log.splitlines()):
        text = line.strip()
        if _ERROR_LINE.match(text) and not _LAUNCHER_LINE.match(text):
            return text[:300]
    return ""


def death_reason(reason: str, log: str) -> str:
    """`reason` followed by the last error line of the replica's `log`, when it has one."""
    error = last_error_line(log)
    return f"{reason}: {error}" if error else reason


# -- kept logs of stopped replicas ------------------------------------------------------------

_STOPPED = ".stopped.json"


@dataclass(frozen=True)
class StoppedRecord:
    """Whose a kept log is, from its sidecar `<id>.stopped.json`."""

    id: str
    project: str
    endpoint: str
    entity: str
    stopped_at: float
    log: Path


def record_stopped(logs_dir: Path, handle: ReplicaHandle) -> None:
    """Write the sidecar of `handle`'s kept log (best effort: the log is kept either way)."""
    labels = handle.data.get("labels")
    project = labels.get("declare.project", "") if isinstance(labels, Mapping) else ""
    sidecar = {
        "project": str(project),
        "endpoint": handle.endpoint,
        "entity": handle.entity,
        "stopped_at": time.time(),
    }
    with contextlib.suppress(OSError):
        (logs_dir / f"{handle.id}{_STOPPED}").write_text(json.dumps(sidecar))


def stopped_records(logs_dir: Path, log_of: Callable[[str], Path]) -> list[StoppedRecord]:
    """Every sidecar in `logs_dir` whose kept log (`log_of(replica id)`) is still there,
    newest stop first; unreadable sidecars are passed over."""
    if not logs_dir.is_dir():
        return []
    found: list[StoppedRecord] = []
    for sidecar in logs_dir.glob(f"*{_STOPPED}"):
        replica_id = sidecar.name.removesuffix(_STOPPED)
        try:
            data = json.loads(sidecar.read_text())
            record = StoppedRecord(
                id=replica_id,
                project=str(data["project"]),
                endpoint=str(data["endpoint"]),
                entity=str(data["entity"]),
                stopped_at=float(data["stopped_at"]),
                log=log_of(replica_id),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.log.exists():
            found.append(record)
    return sorted(found, key=lambda r: r.stopped_at, reverse=True)


# -- model sources -----------------------------------------------------------------------------


def is_local_source(source: str) -> bool:
    """True when a model source is a path on this machine (no scheme, or file:)."""
    return urllib.parse.urlparse(source).scheme in ("", "file")


def local_source_path(source: str) -> Path:
    """The path of a local model source (a plain path or a file: URI)."""
    if source.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(source).path))
    return Path(source)


def replica_concurrency_setting(raw: Mapping[str, Any], provider: str) -> int:
    """`providers.<provider>.replica_concurrency`: concurrent requests one replica serves
    (default 4); ConfigError naming the field when it is not a whole number >= 1."""
    value: object = raw.get("replica_concurrency", 4)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"providers.{provider}.replica_concurrency: must be a whole number of at least 1, "
            f"got {value!r}"
        )
    return value
