"""The gateway's connection options and how aiohttp's parser errors are worded (no sockets:
tests/integration/test_gateway_hostile.py sends the real bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from declare.gateway.__main__ import StartupError, make_config, parse_args
from declare.gateway.protocol import _client_error


def _args(tmp_path: Path, *more: str) -> list[str]:
    token = tmp_path / "admin-token"
    token.write_text("secret")
    token.chmod(0o600)
    return ["--port", "1", "--admin-token-file", str(token), *more]


def test_the_connection_timeouts_default_to_10_and_75_seconds(tmp_path: Path) -> None:
    config = make_config(parse_args(_args(tmp_path)))
    assert (config.header_timeout, config.idle_timeout) == (10, 75)
    config = make_config(
        parse_args(_args(tmp_path, "--header-timeout", "2.5", "--idle-timeout", "9"))
    )
    assert (config.header_timeout, config.idle_timeout) == (2.5, 9)


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
@pytest.mark.parametrize("option", ["--header-timeout", "--idle-timeout"])
def test_the_gateway_refuses_a_timeout_that_cannot_work(
    tmp_path: Path, option: str, value: str
) -> None:
    with pytest.raises(StartupError) as exc:
        make_config(parse_args(_args(tmp_path, option, value)))
    assert option in str(exc.value)


def test_a_parser_error_is_a_json_400_with_its_first_line_only() -> None:
    response = _client_error(400, BadHttpMessage("bad chunk\nsecond line"), None)
    assert response.status == 400
    assert response.content_type == "application/json"
    assert response.text is not None
    assert json.loads(response.text) == {
        "error_code": "BAD_REQUEST",
        "message": "malformed HTTP request: bad chunk",
    }


def test_a_long_parser_message_is_cut() -> None:
    response = _client_error(400, LineTooLong(b"a" * 5000, 8190), None)
    assert response.text is not None
    message = json.loads(response.text)["message"]
    assert len(message) < 400
    assert message.endswith("...")
