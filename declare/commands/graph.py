"""`declare graph [DIR] [--format dot|mermaid] [--destroy]`: print the plan's DAG.

Plans exactly as `declare plan` does (manifests, state, what runs; under the state lock) and
prints the action graph as Graphviz DOT (`| dot -Tsvg > plan.svg`) or as a Mermaid flowchart
(for a ```mermaid block in Markdown). The renderings are declare.views.graph's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from declare.commands._common import LockTimeout
from declare.errors import ConfigError
from declare.views.graph import RENDERERS


def graph(
    project_dir: Annotated[
        Path, typer.Argument(help="Project folder (default: the current folder).")
    ] = Path("."),
    fmt: Annotated[
        str, typer.Option("--format", help="dot (Graphviz) or mermaid.", metavar="FORMAT")
    ] = "dot",
    destroy: Annotated[bool, typer.Option("--destroy", help="Graph a destroy plan.")] = False,
    lock_timeout: LockTimeout = "0s",
) -> None:
    """Print the plan's graph of actions as Graphviz DOT or Mermaid."""
    render = RENDERERS.get(fmt)
    if render is None:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(RENDERERS)}")
    from declare import engine
    from declare.commands._common import parse_duration
    from declare.project import open_project

    project = open_project(project_dir)
    with project.backend.locked("plan", parse_duration(lock_timeout)):
        proposal = engine.make_plan(
            project, project.read_state(), engine.PlanOptions(destroy=destroy)
        )
    typer.echo(render(proposal.plan), nl=False)


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    app.command("graph")(graph)
