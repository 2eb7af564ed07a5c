"""Letting a stopping gateway's clients go to the gateway that took over its port.

With SO_REUSEPORT a new gateway listens on the port before the old one stops. Once the old
one closes its listening socket, new connections reach only the new one, but clients keep
their kept-alive connections to the old one. Closing an idle kept-alive connection races a
client that is just sending on it: the request is lost (httpx raises `RemoteProtocolError`,
"Server disconnected without sending a response", and does not retry it). So the old one
first answers every request still arriving on its open connections with `Connection: close`
(the client then reconnects, to the new gateway), and waits a moment for them to go before
aiohttp closes what is left and drains the requests in flight.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

RELEASE_SECONDS = 2.0  # the longest a stopping gateway waits for its clients to leave


class ConnectionRelease:
    """An `on_response_prepare` hook that closes each connection after its response once
    `release` has begun (the listening socket is closed)."""

    def __init__(self) -> None:
        self.releasing = False

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.releasing:
            response.force_close()  # `Connection: close`: the client reconnects elsewhere

    async def release(self, runner: web.AppRunner, site: web.BaseSite, seconds: float) -> None:
        """Close the listening socket, then wait up to `seconds` until no connection is
        left (each closes after its next response)."""
        self.releasing = True
        await site.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while runner.server is not None and runner.server.connections:
            if loop.time() >= deadline:
                return
            await asyncio.sleep(0.02)
