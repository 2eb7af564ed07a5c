"""The JSON object of a small `application/json` request body, decoded once per request.

`json_object(body, content_type)` is what the short way (`declare.serve.direct`) and batching
(`declare.serve.joining`) look at: the body decoded when its Content-Type is
`application/json` (charset utf-8 or none) and it is at most `MAX_BODY_BYTES`, and it is a
JSON object; None otherwise (the request then goes MLflow's way, which decodes it itself and
answers its errors). What it does not do: decide what the object may hold.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_BODY_BYTES", "is_json", "json_object"]

MAX_BODY_BYTES = 64 * 1024


def is_json(content_type: str | None) -> bool:
    """`application/json`, with no parameter but a utf-8 charset."""
    if content_type is None:
        return False
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    if mime != "application/json":
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name != "charset" or value.lower() != "utf-8":
            return False
    return True


def json_object(body: bytes, content_type: str | None) -> dict[str, Any] | None:
    if len(body) > MAX_BODY_BYTES or not is_json(content_type):
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
