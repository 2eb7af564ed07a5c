"""`declare import databricks FILE [--out FILE]`: a manifest from a Databricks endpoint.

FILE (or `-` for standard input) holds the JSON of `GET /api/2.0/serving-endpoints/{name}`
(or of the list `GET /api/2.0/serving-endpoints`). The manifest goes to standard output or to
`--out`; the fields dropped as read-only or unknown are listed on standard error. The mapping
itself is declare.importers.databricks's; this module reads and writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from declare.errors import ConfigError
from declare.importers.databricks import import_response, to_yaml

import_app = typer.Typer(
    help="Turn serving endpoints defined elsewhere into manifests.", no_args_is_help=True
)


@import_app.command("databricks")
def databricks(
    file: Annotated[
        str,
        typer.Argument(
            help="JSON of GET /api/2.0/serving-endpoints/{name}; '-' for standard input.",
            metavar="FILE",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the manifest here instead of standard output."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Turn a Databricks serving endpoint (GET response JSON) into a declare manifest."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    source = "<stdin>" if file == "-" else file
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: not JSON: {exc}") from None
    imported = import_response(data, source)
    manifest = to_yaml(imported)
    for item in imported:
        if item.dropped:
            typer.echo(
                f"{item.name}: dropped read-only or unknown fields: {', '.join(item.dropped)}",
                err=True,
            )
    if out is None:
        typer.echo(manifest, nl=False)
        return
    if out.exists() and not force:
        raise ConfigError(f"--out {out}: the file exists; pass --force to overwrite it")
    out.write_text(manifest, encoding="utf-8")
    names = ", ".join(i.name for i in imported)
    typer.echo(f"Wrote {out} ({names}). Check it with `declare validate`.", err=True)


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
