"""The gateway's connections below the application: aiohttp's errors in JSON, a head timeout.

aiohttp's HTTP parser answers some requests before any handler or middleware sees them: a
malformed request line, a header line over its limit, a bad Content-Length or chunked
encoding. `GatewayProtocol.handle_error` (aiohttp's hook for those answers) gives them the
gateway's JSON shape `{"error_code", "message"}` (responses.py) with a 4xx status, closes the
connection, and logs one line without a traceback: a client's bad bytes are not the gateway's
fault. A 500 (an exception that escaped the middleware, which should not happen) is JSON too
and keeps its traceback in the log.

A request body that does not decode (a bad gzip) and that no handler read, drained by aiohttp
after the answer, is logged as one line too (`log_exception`).

`GatewayProtocol` also closes a connection whose first request head has not fully arrived
within `header_timeout` seconds (a client that opens sockets and trickles or sends nothing
holds none for long). The head of a later request on a kept-alive connection is bounded by
aiohttp's `keepalive_timeout` (the idle timeout), not by this timer.

`GatewayRunner` is `web.AppRunner` whose server makes `GatewayProtocol` connections; its
other keyword arguments (`keepalive_timeout`, ...) go to aiohttp as they would. This module
routes nothing, reads no settings and holds no state beyond each connection's timer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from declare.gateway.responses import error_response

log = logging.getLogger("declare.gateway")

_CODES = {404: "RESOURCE_DOES_NOT_EXIST", 408: "REQUEST_TIMEOUT", 413: "BAD_REQUEST"}


def _client_error(status: int, exc: BaseException | None, message: str | None) -> web.Response:
    """The JSON answer to a request aiohttp's parser refused (`status`, its exception)."""
    if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
        status = exc.code
    why = (message or (exc.message if isinstance(exc, HttpProcessingError) else "")).strip()
    why = why.splitlines()[0] if why else "the request cannot be parsed"
    if len(why) > 300:
        why = why[:300] + "..."
    return error_response(
        status, _CODES.get(status, "BAD_REQUEST"), f"malformed HTTP request: {why}"
    )


class GatewayProtocol(RequestHandler):
    """aiohttp's connection handler, with JSON error answers and a first-head timeout."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._header_timeout > 0:
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_later(self._header_timeout, self._head_too_slow)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.head_received()
        super().connection_lost(exc)

    def head_received(self) -> None:
        """The first request's head is complete (or refused): its timer stops."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        log.debug("closed a connection whose request head took over %g s", self._header_timeout)
        self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """One line, no traceback, for a request body that does not decode and that no
        handler read (aiohttp drains it after the answer went out: the client got its
        answer, the bad bytes are the client's); anything else as aiohttp logs it."""
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError):
            log.info("discarded an unread request body that does not decode: %s", exc)
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse or handle, as gateway JSON."""
        if request.writer.output_size > 0:  # aiohttp's own rule: nothing more can be sent
            raise ConnectionError("a response was already sent; the connection is closed")
        if status >= 500:
            log.error("unhandled error on a request (answered %d)", status, exc_info=exc)
            response = error_response(status, "INTERNAL_ERROR", "the gateway failed; see its log")
        else:
            response = _client_error(status, exc, message)
            log.info("refused a malformed request (%d): %s", response.status, response.text)
        response.force_close()
        return response


class GatewayServer(web.Server):
    """aiohttp's server whose connections are `GatewayProtocol`s."""

    def __init__(self, base: web.Server, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            **kwargs,
        )
        self._base_factory = base.request_factory
        self.request_factory = self._make_gateway_request
        self._header_timeout = header_timeout
        self._protocol_kwargs = kwargs

    def _make_gateway_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        if isinstance(protocol, GatewayProtocol):
            protocol.head_received()
        return self._base_factory(message, payload, protocol, writer, task)

    def __call__(self) -> RequestHandler:
        return GatewayProtocol(
            self,
            loop=asyncio.get_running_loop(),
            header_timeout=self._header_timeout,
            **self._protocol_kwargs,
        )


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` serving through `GatewayServer` (see the module docstring)."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._server_kwargs = kwargs

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        kwargs = {
            k: v
            for k, v in self._server_kwargs.items()
            if k not in ("handle_signals", "handler_cancellation", "shutdown_timeout")
        }
        return GatewayServer(base, self._header_timeout, **kwargs)
