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
    gateway_running,
    read_gateway_record,
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
            settings_hash=settings.hash,
        )

    def stop(self) -> None:
        stop_gateway(self.state_dir)
