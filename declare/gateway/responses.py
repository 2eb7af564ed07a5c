"""The gateway's error responses: JSON `{"error_code", "message"}` in the Databricks style.

Only the responses more than one part of the application gives live here (the generic one,
an unknown endpoint, a body over the limit, a temporarily unavailable endpoint), and the 429
of a rate limit. This module
holds no state and decides nothing about when to give them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from aiohttp import web

from declare.model.limits import RateLimit


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error_code": code, "message": message}, status=status, headers=headers
    )


def no_such_endpoint(name: str) -> web.Response:
    return error_response(
        404, "RESOURCE_DOES_NOT_EXIST", f"serving endpoint {name!r} does not exist"
    )


def too_large(limit: int, size: int | None) -> web.Response:
    """413 for a body over `limit` bytes; `size` when the request declared its length."""
    what = f"{size} bytes" if size is not None else "the request body"
    return error_response(
        413, "BAD_REQUEST", f"{what} exceeds the gateway's limit of {limit} bytes"
    )


def unavailable(message: str, retry_after: Mapping[str, str]) -> web.Response:
    """503 TEMPORARILY_UNAVAILABLE with the `Retry-After` header given in `retry_after`."""
    return error_response(503, "TEMPORARILY_UNAVAILABLE", message, headers=retry_after)


def rate_limited(endpoint: str, limits: Sequence[RateLimit], wait: float) -> web.Response:
    """429 REQUEST_LIMIT_EXCEEDED naming the limits, Retry-After the `wait` until a reset."""
    shown = ", ".join(f"{r.calls} calls per {r.renewal_period} ({r.key})" for r in limits)
    return error_response(
        429,
        "REQUEST_LIMIT_EXCEEDED",
        f"serving endpoint {endpoint!r} is over its rate limit ({shown}); "
        f"retry in {math.ceil(wait)} s",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )
