"""One request and its answer handed to the capture buffer, from the data plane.

`capture_exchange` builds the `Captured` value of a finished request of a capturing endpoint
(its body, read again: aiohttp kept it, unless the gateway answered before reading it, a 429
or a 415, when it waits at most CAPTURE_READ_SECONDS for it) and offers it to the buffer. It
never waits for a write and never raises: a body it cannot read is captured empty.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from declare.gateway.capture.buffer import CaptureBuffer, Captured
from declare.gateway.table import EndpointTable

# The longest a captured request answered before its body was read (a 429, a 415) waits for
# that body; a slow sender's request is then captured with an empty body.
CAPTURE_READ_SECONDS = 1.0


async def capture_exchange(
    buffer: CaptureBuffer,
    caller: str,
    request: web.Request,
    table: EndpointTable,
    entity: str | None,
    response: web.Response,
    arrived: float,
    elapsed_ms: float,
) -> None:
    """Hand this request and its answer to `buffer` (`table.capture` must be set)."""
    assert table.capture is not None
    # The data plane read it already (aiohttp keeps it): no timer to arm, nothing to await.
    kept = getattr(request, "_read_bytes", None)
    if isinstance(kept, bytes):
        body = kept
    else:
        try:
            async with asyncio.timeout(CAPTURE_READ_SECONDS):
                body = await request.read()
        except (web.HTTPException, RequestPayloadError, ConnectionError, TimeoutError):
            body = b""  # too large, not decodable, cut off, or still arriving: captured empty
    payload = response.body if isinstance(response.body, bytes) else b""
    model = table.models.get(entity) if entity is not None else None
    buffer.offer(
        Captured(
            table.capture,
            table.name,
            table.served_name(entity) if entity is not None else None,
            model.name if model is not None else None,
            model.version if model is not None else None,
            int(arrived * 1000),
            response.status,
            int(elapsed_ms),
            body,
            payload,
            caller,
        )
    )
