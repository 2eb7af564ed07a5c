"""The admin API answers loopback peers only: anyone else gets 404 (server.py middleware)."""

from __future__ import annotations

import asyncio
from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from declare.gateway import ADMIN_HEADER
from declare.gateway.server import Gateway, GatewayConfig


def _status(peer: str) -> int:
    gateway = Gateway(GatewayConfig(admin_token="secret"))
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    request = make_mocked_request(
        "GET", "/_declare/admin/table", headers={ADMIN_HEADER: "secret"}, transport=transport
    )

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    response = asyncio.run(gateway._middleware(request, handler))
    return response.status


def test_admin_paths_answer_loopback_peers() -> None:
    assert _status("127.0.0.1") == 200
    assert _status("::1") == 200


def test_admin_paths_are_not_found_from_a_network_peer() -> None:
    assert _status("10.77.0.2") == 404
