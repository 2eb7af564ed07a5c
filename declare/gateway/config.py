"""The gateway process's settings, as one immutable value.

`GatewayConfig` is built once at start-up (by `__main__.py` from the command line and the
environment) and read by every part of the application. This module parses nothing and
holds no state; `declare.gateway.server` re-exports `GatewayConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from declare.gateway import MAX_BODY_BYTES
from declare.gateway.capture.rows import MAX_PAYLOAD_BYTES
from declare.gateway.metrics import DEFAULT_CAPACITY


@dataclass(frozen=True)
class GatewayConfig:
    """The settings of one gateway process (tokens, limits, timeouts, pool sizes, holding)."""

    admin_token: str
    auth_token: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    queue_timeout: float = 30.0  # longest wait for a connection slot to a replica
    upstream_timeout: float = 300.0  # longest wait for a replica's response (read timeout)
    body_timeout: float = 30.0  # longest a client may take to send its request's body
    header_timeout: float = 10.0  # longest a new connection may take to send its request head
    idle_timeout: float = 75.0  # longest a kept-alive connection may idle between requests
    connect_timeout: float = 5.0  # TCP connect to a replica
    pool_size: int = 1024  # connections to all replicas together
    pool_per_replica: int = 256  # connections to one replica
    keepalive_seconds: float = 4.0  # below uvicorn's 5 s, so a pooled socket is never stale
    retry_after_seconds: int = 1
    metrics_capacity: int = DEFAULT_CAPACITY
    hold_queue: int = 1000  # most requests held per endpoint waiting for a replica (hold.py)
    eject_seconds: float = 2.0  # an unreachable replica is skipped this long (eject.py)
    # where each pushed table is kept, so that a gateway started again (after a crash)
    # routes at once as before instead of knowing no endpoint until the next push
    table_file: Path | None = None
    # inference tables (capture/): the folder below which each capturing endpoint's Delta
    # table lives (None: nothing is captured), the most records waiting to be written (then
    # dropped and counted), a write every `capture_flush_records` records or
    # `capture_flush_seconds`, and payloads over `capture_max_payload_bytes` stored truncated
    capture_root: Path | None = None
    capture_buffer: int = 20_000
    capture_flush_records: int = 5_000
    capture_flush_seconds: float = 1.0
    capture_max_payload_bytes: int = MAX_PAYLOAD_BYTES
    # one JSON line per request (access.py); None: no access log
    access_log: Path | None = None
    # shadow steps (shadow.py): the most mirrored requests in flight (beyond: dropped and
    # counted) and the longest a candidate may take to answer one (then: an error)
    shadow_inflight: int = 64
    shadow_timeout: float = 30.0
