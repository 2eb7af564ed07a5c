"""The project's gateway as a detached process: `ProcessGateway` implements
`declare.ports.GatewayControl` with `declare.gateway.process` (start, find, stop the
process, files under `state_dir/gateway/`; inference tables under `state_dir/capture/`
unless declare.yaml's `capture.root` says otherwise) and `declare.gateway.client` (its admin API).

Does not push tables on its own: the apply ledger does.
"""

from __future__ import annotations

from pathlib import Path

from declare.gateway.client import GatewayClient
from declare.gateway.process import (
    GatewayRecord,
    can_take_over,
    gateway_running,
    read_gateway_record,
    retire_gateway,
    start_gateway,
    stop_gateway,
)
from declare.ports import GatewayAdmin, GatewaySettings

CAPTURE_DIR = "capture"  # the inference tables' default folder, in the state folder


class ProcessGateway:
    """The gateway process of the project whose state folder is `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def record(self) -> GatewayRecord | None:
        return read_gateway_record(self.state_dir)

    def admin(self) -> GatewayAdmin | None:
        record = self.record()
        if record is None or not gateway_running(record):
            return None
        return GatewayClient(record.base_url, record.admin_token())

    def settings_hash(self) -> str | None:
        """The hash of the settings the running gateway was started with, from its record
        (None: none runs, or its record does not say)."""
        record = self.record()
        if record is None or not record.settings_hash or not gateway_running(record):
            return None
        return record.settings_hash

    def start(self, settings: GatewaySettings) -> None:
        self._start(settings, None)

    def restart(self, settings: GatewaySettings) -> bool:
        """Replace the running gateway with one started with `settings`.

        When the old one listens with SO_REUSEPORT, the new one binds the same port while
        the old one still listens, loads the routing table the old one kept (`table.json`)
        before it accepts, and is recorded once it answers; only then is the old one told
        to stop (it closes its socket and drains its requests in flight). Otherwise (an old
        gateway started without SO_REUSEPORT by an older declare, or on another port) the
        old one is stopped first. Returns False when a running gateway had to be stopped
        before the new one listened (requests meanwhile were refused), else True.
        """
        old = self.record()
        same_port = old is not None and (old.host, old.port) == (settings.host, settings.port)
        if old is None or not same_port or not can_take_over(old):
            was_running = old is not None and gateway_running(old)
            self.stop()
            self._start(settings, None)
            return not was_running
        self._start(settings, old)
        retire_gateway(old)
        return True

    def _start(self, settings: GatewaySettings, take_over: GatewayRecord | None) -> None:
        start_gateway(
            self.state_dir,
            host=settings.host,
            port=settings.port,
            auth_token=settings.auth_token,
            max_body_bytes=settings.max_body_bytes,
            queue_timeout=settings.queue_timeout_seconds,
            hold_queue=settings.hold_queue,
            header_timeout=settings.header_timeout_seconds,
            idle_timeout=settings.idle_timeout_seconds,
            capture_root=settings.capture_root or self.state_dir / CAPTURE_DIR,
            capture_max_payload_bytes=settings.capture_max_payload_bytes,
            access_log=settings.access_log,
            settings_hash=settings.hash,
            take_over=take_over,
        )

    def stop(self) -> None:
        stop_gateway(self.state_dir)
