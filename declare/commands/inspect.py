"""Commands that read what declare recorded and what runs: show, status, state list/show,
force-unlock, logs. They change nothing but a stuck lock (force-unlock)."""

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
    project_dir = path
    project = open_project(project_dir)
    state = project.read_state()
    if as_json:
        echo(json.dumps(state.to_json(), indent=2))
        return
    if not state.endpoints:
        echo("The state is empty: no endpoint has been applied.")
        return
    echo(f"# state serial {state.serial}, lineage {state.lineage}")
    for name, ep in sorted(state.endpoints.items()):
        echo(f'endpoint "{name}" ({ep.provider}): {ep.config_update}, config v{ep.config_version}')
        if ep.message:
            echo(f"  message: {ep.message.splitlines()[0]}")
        for r in ep.routes:
            model = ep.models.get(r.served_entity_name)
            desc = model.describe() if model else "?"
            echo(f"  route {r.served_entity_name} {r.traffic_percentage}% -> {desc}")
        for rep in ep.replicas:
            flag = "in rotation" if rep.ready and not rep.retired else "not in rotation"
            echo(f"  replica {rep.id} [{rep.entity}] {rep.handle.url} ({flag})")
        echo(f"  url: {project.invocation_url(name)}")


def status(project_dir: DirArg = Path("."), as_json: JsonOpt = False) -> None:
    """Live status of each endpoint, as the gateway serves it (Databricks shape)."""
    from declare.describe import describe
    from declare.provider import Liveness

    project = open_project(project_dir)
    state = project.read_state()
    client = project.gateway_client()
    gateway = "running" if client is not None else "not running"
    out = []
    for name, ep in sorted(state.endpoints.items()):
        desc = describe(ep)
        alive = 0
        for rep in ep.replicas:
            s = project.provider(rep.handle.provider).status(rep.handle)
            alive += s.liveness is Liveness.ALIVE
        desc["declare"] = {
            "invocation_url": project.invocation_url(name),
            "replicas_alive": alive,
            "replicas_recorded": len(ep.replicas),
            "message": ep.message,
        }
        out.append(desc)
    if as_json:
        echo(json.dumps({"gateway": gateway, "endpoints": out}, indent=2))
        return
    echo(f"gateway: {gateway} on {project.config.gateway_host}:{project.config.gateway_port}")
    if not out:
        echo("no endpoints")
    for d in out:
        extra = d["declare"]
        echo(
            f"{d['name']}: {d['state']['ready']}, {d['state']['config_update']}, "
            f"{extra['replicas_alive']}/{extra['replicas_recorded']} replicas alive, "
            f"{extra['invocation_url']}"
        )
        if extra["message"]:
            echo(f"  {extra['message'].splitlines()[0]}")


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
        confirm(False, f"remove the state lock {lock_id}")
    project.backend.force_unlock(lock_id)
    echo(f"declare state has been successfully unlocked (lock {lock_id}).")


def logs(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    entity: Annotated[str | None, typer.Argument(help="Served entity name (default: all).")] = None,
    project_dir: Annotated[Path, typer.Option("--project", "-C", help="Project folder.")] = Path(
        "."
    ),
    tail: Annotated[int, typer.Option("--tail", help="Lines per replica.")] = 50,
) -> None:
    """Show the logs of an endpoint's replicas."""
    project = open_project(project_dir)
    state = project.read_state()
    ep = state.endpoints.get(endpoint)
    if ep is None:
        known = ", ".join(sorted(state.endpoints)) or "none"
        raise ConfigError(f"no endpoint {endpoint!r} in the state; endpoints: {known}")
    replicas = [r for r in ep.replicas if entity is None or r.entity == entity]
    if not replicas:
        raise ConfigError(f"endpoint {endpoint!r} has no replica of {entity!r}")
    for rep in replicas:
        echo(f"==> {rep.id} ({rep.entity}) <==")
        echo(project.provider(rep.handle.provider).logs(rep.handle, tail))


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    app.command()(show)
    app.command()(status)
    state_app.command("list")(state_list)
    state_app.command("show")(state_show)
    app.command("force-unlock")(force_unlock)
    app.command()(logs)
