"""The admin API answers callers on this host only (a loopback peer, or one calling from the
address it reached): anyone else gets 404 (server.py middleware)."""

from __future__ import annotations

import asyncio
from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from declare.gateway import ADMIN_HEADER
from declare.gateway.server import Gateway, GatewayConfig


def _status(peer: str, local: str = "127.0.0.1") -> int:
    gateway = Gateway(GatewayConfig(admin_token="secret"))
    transport = mock.Mock()
    names = {"peername": (peer, 40000), "sockname": (local, 8787)}
    transport.get_extra_info.side_effect = lambda name, default=None: names.get(name, default)
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
    assert _status("10.77.0.2", local="10.77.0.1") == 404


def test_admin_paths_answer_this_host_on_its_network_address() -> None:
    # declare's own client, calling a gateway bound to 10.77.0.1 from this host
    assert _status("10.77.0.1", local="10.77.0.1") == 200
