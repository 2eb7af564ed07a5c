"""`declare query ENDPOINT [DIR] [--data FILE|-]`: one request through the gateway.

Sends the body (a file, stdin with '-', or, without --data, the input example recorded
with the model the endpoint serves first) to the endpoint's invocation URL, with the
gateway's bearer token when declare.yaml names one, and prints the HTTP status, the served
entity that answered and the answer (JSON indented). Exit 0 on a 2xx, 1 otherwise, with the
gateway's error message. Changes nothing, takes no lock.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from declare.commands._common import DirArg, echo, err
from declare.errors import ConfigError
from declare.project import Project, open_project
from declare.resolve import load_input_example

TIMEOUT_SECONDS = 60.0


def _body(project: Project, endpoint: str, data: str | None) -> tuple[str, bytes]:
    if data == "-":
        raw = sys.stdin.buffer.read()
    elif data is not None:
        try:
            raw = Path(data).read_bytes()
        except OSError as exc:
            raise ConfigError(f"--data {data}: cannot read it ({exc.strerror})") from None
    else:
        return _example(project, endpoint)
    text = raw.lstrip()
    return ("application/json" if text[:1] in (b"{", b"[") else "text/csv"), raw


def _example(project: Project, endpoint: str) -> tuple[str, bytes]:
    record = project.read_state().endpoints.get(endpoint)
    if record is None:
        raise ConfigError(f"endpoint {endpoint!r} is not in the state: pass --data FILE")
    for route in record.routes:
        model = record.models.get(route.served_entity_name)
        example = load_input_example(model) if model else None
        if example is not None:
            return example
    raise ConfigError(
        f"the model endpoint {endpoint!r} serves has no input example: pass --data FILE"
    )


def query(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    project_dir: DirArg = Path("."),
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Request body file ('-': stdin). Default: the "
                     "model's input example."),
    ] = None,
) -> None:  # fmt: skip
    """Send one request through the gateway and print the answer and who served it."""
    project = open_project(project_dir)
    content_type, body = _body(project, endpoint, data)
    headers = {"Content-Type": content_type}
    token = project.config.gateway_auth_token(project.environ)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = project.invocation_url(endpoint)
    try:
        response = httpx.post(
            url, content=body, headers=headers, timeout=TIMEOUT_SECONDS, trust_env=False
        )
    except httpx.HTTPError as exc:
        raise ConfigError(f"POST {url}: {exc} (is the gateway running? `declare status`)") from None
    served = response.headers.get("served-model-name", "-")
    took = response.elapsed.total_seconds() * 1000
    echo(f"HTTP {response.status_code} from {served} ({took:.0f} ms)")
    try:
        shown = json.dumps(response.json(), indent=2)
    except ValueError:
        shown = response.text
    if response.is_success:
        echo(shown)
        return
    err(shown)
    raise typer.Exit(1)


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    app.command("query")(query)
