"""`declare runtime unit`: print (or write) the systemd unit of the project's runtime.

Changes nothing but the file given to `--output`; installing and enabling the unit is the
user's (`systemctl`), see the README's "The runtime under systemd".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from declare.commands._common import DirArg, echo
from declare.project import open_project
from declare.runtime_unit import render_unit, unit_name


def unit(
    project_dir: DirArg = Path("."),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the unit to this file.")
    ] = None,
) -> None:
    """Print the systemd unit that runs this project's runtime (supervisor: systemd)."""
    project = open_project(project_dir)
    text = render_unit(project.config, project.runtime_environment(), sys.executable)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text)
    echo(f"wrote {output} ({unit_name(project.config)})")


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    runtime_app = typer.Typer(
        help="The runtime that heals and scales between applies.",
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    runtime_app.command("unit")(unit)
    app.add_typer(runtime_app, name="runtime")
