"""Synchronous client of the gateway's admin interface, for declare's apply and the runtime.

`GatewayClient(base_url, admin_token)` pushes and reads routing tables, drains replicas,
reads metrics and reads demand (optionally as a long poll, for the runtime). Every failure
(not reachable, refused, an answer that is not what it should be) raises
`declare.errors.GatewayError` saying what was asked of which gateway. It does not start or
stop the gateway: see `declare.gateway.process`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

from declare.errors import GatewayError
from declare.gateway import ADMIN_HEADER
from declare.gateway.table import RoutingTable


class GatewayClient:
    """One gateway's admin interface over a pooled httpx client (close it, or use `with`)."""

    def __init__(self, base_url: str, admin_token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={ADMIN_HEADER: admin_token},
            timeout=timeout,
            trust_env=False,  # loopback only: never through a proxy from the environment
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        try:
            response = self._http.request(
                method,
                path,
                json=json_body,
                params=params,
                timeout=timeout if timeout is not None else self._timeout,
            )
        except httpx.HTTPError as exc:
            raise GatewayError(
                f"cannot {what}: the gateway at {self.base_url} is not reachable ({exc})"
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code != 200:
            message = data.get("message") if isinstance(data, dict) else response.text[:200]
            raise GatewayError(
                f"cannot {what}: the gateway at {self.base_url} answered "
                f"{response.status_code}: {message}"
            )
        if not isinstance(data, dict):
            raise GatewayError(
                f"cannot {what}: the gateway at {self.base_url} answered with no JSON object"
            )
        return data

    def health(self) -> dict[str, Any] | None:
        """The gateway's health document, or None when nothing answers as a gateway there."""
        try:
            response = self._http.get("/_declare/health", timeout=2.0)
            data = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        if response.status_code != 200 or not isinstance(data, dict) or "pid" not in data:
            return None
        return data

    def put_table(self, table: RoutingTable) -> int:
        """Swap in `table`; returns the version the gateway now serves."""
        data = self._call(
            "PUT", "/_declare/admin/table", "push the routing table", json_body=table.to_json()
        )
        return int(data["version"])

    def get_table(self) -> RoutingTable:
        data = self._call("GET", "/_declare/admin/table", "read the routing table")
        try:
            return RoutingTable.from_json(data)
        except ValueError as exc:
            raise GatewayError(f"the gateway at {self.base_url} sent a bad table: {exc}") from exc

    def drain(self, replica_ids: Sequence[str], timeout_seconds: float) -> bool:
        """Wait until none of `replica_ids` has a request in flight; False if time ran out."""
        data = self._call(
            "POST",
            "/_declare/admin/drain",
            f"drain replicas {', '.join(replica_ids)}",
            json_body={"replica_ids": list(replica_ids), "timeout_seconds": timeout_seconds},
            timeout=timeout_seconds + self._timeout,
        )
        return bool(data["drained"])

    def metrics(self, since: float | None = None) -> dict[str, Any]:
        """Per endpoint and entity: requests, errors, p50/p99 since `since`, and totals."""
        params = {"since": repr(since)} if since is not None else None
        result: dict[str, Any] = self._call(
            "GET", "/_declare/admin/metrics", "read metrics", params=params
        )
        return result

    def demand(self, wait: float = 0.0) -> dict[str, Any]:
        """Demand per served entity (inflight, held, peak, last_request_at, ejected); the
        gateway then restarts every peak. With `wait` > 0 (at most 30), the answer comes as
        soon as a request becomes held or a replica cannot be reached, or after `wait` s."""
        params = {"wait": repr(float(wait))} if wait > 0 else None
        result: dict[str, Any] = self._call(
            "GET",
            "/_declare/admin/demand",
            "read demand",
            params=params,
            timeout=max(wait, 0.0) + self._timeout,
        )
        return result
