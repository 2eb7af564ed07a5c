"""The boundaries the engine and apply act through, besides providers and the state backend.

    GatewayControl  the project's gateway process: start, stop, and its admin API when it runs
    GatewayAdmin    a running gateway's admin API: routing table, drain, metrics, demand
    RuntimeControl  the project's runtime process (heals and scales between applies)
    Probe           a replica's readiness, proven by a real prediction
    Clock           time and sleeping (bakes, deadlines)

Real implementations: `declare.gateway_control.ProcessGateway` (the gateway as a detached
process, `declare.gateway.process` + `declare.gateway.client`),
`declare.runtime_control.ProcessRuntime`, `declare.readiness.HttpProbe` and `SystemClock`
below. Tests give the executor in-memory ones (tests/fakes.py). Also the gateway's settings
as one value (`GatewaySettings`), whose hash the state records.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from declare.gateway.capture.rows import MAX_PAYLOAD_BYTES
from declare.gateway.table import RoutingTable
from declare.model import ReplicaHandle, ResolvedModel, canonical_json
from declare.provider import Provider

# requests held per endpoint while an entity has no ready replica (the gateway's default)
DEFAULT_HOLD_QUEUE = 1000
DEFAULT_HEADER_TIMEOUT = 10.0  # the gateway's defaults, left out of the settings' hash
DEFAULT_IDLE_TIMEOUT = 75.0


@dataclass(frozen=True)
class GatewaySettings:
    """How the gateway should run (declare.yaml and the token from the environment)."""

    host: str
    port: int
    auth_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 16 * 1024 * 1024
    queue_timeout_seconds: float = 30.0
    # a connection's first request head must arrive within this; an idle kept-alive
    # connection is closed after the other
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT
    idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT
    # requests held per endpoint while an entity has no ready replica (0: none are held,
    # a 503 at once; what a project without the runtime gets, as nothing would wake it)
    hold_queue: int = DEFAULT_HOLD_QUEUE
    # the folder of the inference tables (None: `<state folder>/capture`) and the payload
    # size over which a captured body is stored truncated
    capture_root: Path | None = None
    capture_max_payload_bytes: int = MAX_PAYLOAD_BYTES
    access_log: bool = False  # one JSON line per request in the gateway's folder

    @property
    def hash(self) -> str:
        """What the state records: a change of any setting (or of the token) restarts it."""
        token = self.auth_token
        return hashlib.sha256(
            canonical_json(
                {
                    "host": self.host,
                    "port": self.port,
                    "token": hashlib.sha256(token.encode()).hexdigest() if token else None,
                    "max_body": self.max_body_bytes,
                    "queue_timeout": self.queue_timeout_seconds,
                    **(
                        {}
                        if self.hold_queue == DEFAULT_HOLD_QUEUE
                        else {"hold_queue": self.hold_queue}
                    ),
                    **self._timeouts_hashed(),
                    **({"access_log": True} if self.access_log else {}),
                    # only when set, so that the hash of a gateway started before capture
                    # existed stays the same (no restart)
                    **(
                        {}
                        if self.capture_root is None
                        else {"capture_root": str(self.capture_root)}
                    ),
                    **(
                        {}
                        if self.capture_max_payload_bytes == MAX_PAYLOAD_BYTES
                        else {"capture_max_payload": self.capture_max_payload_bytes}
                    ),
                }
            ).encode()
        ).hexdigest()[:16]

    def _timeouts_hashed(self) -> dict[str, float]:
        """The connection timeouts that differ from the defaults (a gateway started before
        they existed keeps its hash)."""
        hashed: dict[str, float] = {}
        if self.header_timeout_seconds != DEFAULT_HEADER_TIMEOUT:
            hashed["header_timeout"] = self.header_timeout_seconds
        if self.idle_timeout_seconds != DEFAULT_IDLE_TIMEOUT:
            hashed["idle_timeout"] = self.idle_timeout_seconds
        return hashed


class GatewayAdmin(Protocol):
    """A running gateway's admin interface; every failure raises GatewayError."""

    def put_table(self, table: RoutingTable) -> int: ...

    def get_table(self) -> RoutingTable: ...

    def drain(self, replica_ids: Sequence[str], timeout_seconds: float) -> bool: ...

    def metrics(self, since: float | None = None) -> dict[str, Any]: ...

    def demand(self, wait: float = 0.0) -> dict[str, Any]:
        """Per endpoint and entity: in flight, held, the peak since the last call (reset by
        the call) and the last request's time; with `wait`, answers early on a held request
        or a replica that could not be reached."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> GatewayAdmin: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class GatewayControl(Protocol):
    """The project's gateway: one per project, started by apply, outliving it."""

    def admin(self) -> GatewayAdmin | None:
        """A client of the running gateway's admin API, or None when none runs."""
        ...

    def settings_hash(self) -> str | None:
        """The hash of the settings the running gateway was started with, when it recorded
        it (None: none runs, or it does not say): a state lost is no reason to restart it."""
        ...

    def start(self, settings: GatewaySettings) -> None:
        """Start it and wait until it answers; GatewayError when it cannot."""
        ...

    def restart(self, settings: GatewaySettings) -> bool:
        """Replace the running gateway by one with `settings`, the new one listening before
        the old one stops (a handover); False when the old one could not hand over and was
        stopped first."""
        ...

    def stop(self) -> None:
        """Stop it (requests in flight finish) and forget it; nothing when none runs."""
        ...


@dataclass(frozen=True)
class RuntimeStatus:
    """A running runtime, as its record says."""

    pid: int
    keeper_pid: int | None
    started_at: float
    settings_hash: str
    supervisor: str = "declare"  # or "systemd": its unit restarts it, no keeper


class RuntimeControl(Protocol):
    """The project's runtime: one per project, started by apply, stopped by destroy."""

    def status(self) -> RuntimeStatus | None:
        """The running runtime, or None when none runs."""
        ...

    def start(self, settings_hash: str) -> None:
        """Start it (with declare's environment) and wait until it runs."""
        ...

    def stop(self) -> None:
        """Stop it and its keeper for good (neither restarts the other); nothing when none."""
        ...


class Probe(Protocol):
    def await_ready(
        self, provider: Provider, handle: ReplicaHandle, model: ResolvedModel, timeout: float
    ) -> float:
        """Block until the replica answers a real prediction; the seconds it took.
        ReplicaFailedError (with the cause from its log) when it dies or never answers."""
        ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
