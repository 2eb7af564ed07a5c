"""`declare fmt [PATH...] [--check] [--diff]`: rewrite manifests in the canonical layout.

Follows `terraform fmt`: with no path, the manifests of the current folder (and its
declare.yaml); a folder means its manifests (the files `declare plan` reads, by the
folder's `manifests.include`/`exclude`), a file means that file, `-` means standard input to
standard output. The files it rewrote (or, with `--check`, would rewrite) are listed.
Exit codes: 0 everything is formatted (or was rewritten), 3 with `--check` when a file
needs formatting (as `terraform fmt -check`), 1 on an error (a file that is not YAML/JSON).

The layout itself is `declare.fmt`'s; this module only finds, reads, compares and writes.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from declare.errors import ConfigError
from declare.fmt import format_text
from declare.manifests import CONFIG_FILE, DEFAULT_INCLUDE, discover_manifest_files

CHECK_FAILED_EXIT = 3


def _files_of(folder: Path) -> list[Path]:
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    if (folder / CONFIG_FILE).is_file():
        from declare.config import load_config

        config = load_config(folder, os.environ)
        include, exclude = tuple(config.manifest_include), tuple(config.manifest_exclude)
        return [folder / CONFIG_FILE, *discover_manifest_files(folder, include, exclude)]
    return discover_manifest_files(folder, include, exclude)


def _targets(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += _files_of(path)
        elif path.is_file():
            out.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder")
    return list(dict.fromkeys(out))


def _unified(path: str, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{path}",
            tofile=f"b/{path}",
        )
    )


def fmt(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Files or folders (default: the current folder); '-' for standard input.",
            show_default=False,
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Change nothing; exit 3 when a file needs formatting."),
    ] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Print a unified diff of changes.")] = False,
) -> None:
    """Rewrite manifests in the canonical layout (key order, 2-space indent), keeping comments."""
    targets = paths or [Path(".")]
    if Path("-") in targets:
        if len(targets) != 1:
            raise ConfigError("'-' (standard input) cannot be mixed with paths")
        text = sys.stdin.read()
        formatted = format_text(text, "<stdin>")
        if diff:
            typer.echo(_unified("<stdin>", text, formatted), nl=False)
        elif not check:
            typer.echo(formatted, nl=False)
        if check and formatted != text:
            raise typer.Exit(CHECK_FAILED_EXIT)
        return
    changed = []
    for path in _targets(targets):
        text = path.read_text(encoding="utf-8")
        reorder = path.name != CONFIG_FILE
        formatted = format_text(text, str(path), reorder=reorder)
        if formatted == text:
            continue
        changed.append(path)
        typer.echo(str(path))
        if diff:
            typer.echo(_unified(str(path), text, formatted), nl=False)
        if not check:
            path.write_text(formatted, encoding="utf-8")
    if check and changed:
        raise typer.Exit(CHECK_FAILED_EXIT)


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    app.command("fmt")(fmt)
