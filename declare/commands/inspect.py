"""Commands that read what declare recorded and what runs: show, status, state list/show,
force-unlock (`logs` is `declare.commands.logs`). They change nothing but a stuck lock
(force-unlock)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from declare.commands._common import (
    DirArg,
    FormatOpt,
    JsonOpt,
    confirm,
    echo,
    echo_plan,
)
from declare.commands._common import output_format as plan_view
from declare.errors import ConfigError
from declare.plan import saved
from declare.project import open_project
from declare.views.status import state_lines, status_json, status_lines


def show(
    path: Annotated[
        Path,
        typer.Argument(
            help="A project folder (its recorded state) or a saved plan file.", show_default=False
        ),
    ] = Path("."),
    as_json: JsonOpt = False,
    output_format: FormatOpt = None,
) -> None:
    """Show the recorded state, or a saved plan (`declare plan --out FILE`)."""
    if path.is_file():
        echo_plan(saved.read(path).plan, plan_view(output_format, as_json))
        return
    if output_format not in (None, "text", "json"):
        raise ConfigError("--format markdown shows a saved plan; the state has text and json")
    as_json = as_json or output_format == "json"
    project = open_project(path)
    state = project.read_state()
    if as_json:
        echo(json.dumps(state.to_json(), indent=2))
        return
    for line in state_lines(state, project.invocation_url):
        echo(line)


def status(project_dir: DirArg = Path("."), as_json: JsonOpt = False) -> None:
    """Live status of each endpoint, as the gateway serves it (Databricks shape)."""
    from declare.engine import refresh

    project = open_project(project_dir)
    state = project.read_state()
    from declare.provider import replica_concurrency

    per_replica = {
        name: replica_concurrency(project.provider(ep.provider))
        for name, ep in state.endpoints.items()
    }
    report = status_json(
        state,
        refresh(project, state),
        project.invocation_url,
        project.runtime.status(),
        per_replica,
        project.capture_root(),
        project.capture_counters(),
    )
    if as_json:
        echo(json.dumps(report, indent=2))
        return
    cfg = project.config
    for line in status_lines(report, cfg.gateway_host, cfg.gateway_port):
        echo(line)


def state_list(project_dir: DirArg = Path(".")) -> None:
    """List the addresses of everything in the recorded state."""
    state = open_project(project_dir).read_state()
    if state.gateway:
        echo("gateway")
    for name, ep in sorted(state.endpoints.items()):
        echo(f"endpoint.{name}")
        for rep in ep.replicas:
            echo(f"endpoint.{name}.replica[{rep.id}]")


def state_show(
    address: Annotated[str, typer.Argument(help="An address from `declare state list`.")],
    project_dir: DirArg = Path("."),
) -> None:
    """Show one item of the recorded state as JSON."""
    state = open_project(project_dir).read_state()
    doc = state.to_json()
    if address == "gateway" and doc["gateway"]:
        echo(json.dumps(doc["gateway"], indent=2))
        return
    m = re.fullmatch(r"endpoint\.([^.\[]+)(?:\.replica\[([^\]]+)\])?", address)
    if m and m[1] in doc["endpoints"]:
        ep = doc["endpoints"][m[1]]
        if m[2] is None:
            echo(json.dumps(ep, indent=2))
            return
        for rep in ep["replicas"]:
            if rep["handle"]["id"] == m[2]:
                echo(json.dumps(rep, indent=2))
                return
    raise ConfigError(f"no {address!r} in the state; see `declare state list`")


def force_unlock(
    lock_id: Annotated[str, typer.Argument(help="The lock ID that the lock error printed.")],
    project_dir: DirArg = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a stuck state lock. Only when you know its holder is gone."""
    project = open_project(project_dir)
    if not force:
        confirm(False, f"remove the state lock {lock_id}", "Unlock cancelled.")
    project.backend.force_unlock(lock_id)
    echo(f"declare state has been successfully unlocked (lock {lock_id}).")


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    app.command()(show)
    app.command()(status)
    state_app.command("list")(state_list)
    state_app.command("show")(state_show)
    app.command("force-unlock")(force_unlock)
