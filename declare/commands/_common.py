"""Pieces shared by the subcommands: argument types, output helpers, confirmation.

Does not know any subcommand; `declare.cli` and the modules of `declare.commands` use it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, TextIO

import typer

from declare.errors import ConfigError
from declare.plan import Plan
from declare.state.backend import RUNTIME_LOCK_WAIT_SECONDS
from declare.views.plan import render_human, render_json

DirArg = Annotated[
    Path, typer.Argument(help="Project folder (default: the current folder).", show_default=False)
]
LockTimeout = Annotated[
    str,
    typer.Option(
        "--lock-timeout",
        help="How long to wait for a state lock another run holds (0s, the default: fail at "
        f"once; 30s, 5m). A lock the runtime holds is waited for up to "
        f"{RUNTIME_LOCK_WAIT_SECONDS:g} s more.",
        metavar="DURATION",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def echo(text: str = "") -> None:
    typer.echo(text)


def err(text: str) -> None:
    typer.echo(text, err=True)


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise ConfigError(f"--lock-timeout: {text!r} is not a duration such as 0s, 30s, 5m or 1h")
    value = float(m[1])
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m[2]]


FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="Output: text (default), json (as --json) or markdown (a pull-request comment).",
        metavar="FORMAT",
        show_default=False,
    ),
]
PLAN_FORMATS = ("text", "json", "markdown")


def output_format(output_format: str | None, as_json: bool) -> str:
    """The plan view asked for; `--json` is an alias of `--format json`."""
    if output_format is not None and output_format not in PLAN_FORMATS:
        raise ConfigError(f"--format: {output_format!r} is not one of {', '.join(PLAN_FORMATS)}")
    if as_json and output_format not in (None, "json"):
        raise ConfigError(f"--json and --format {output_format} ask for two outputs: pick one")
    return "json" if as_json else output_format or "text"


def echo_plan(the_plan: Plan, view: str) -> None:
    if view == "json":
        echo(json.dumps(render_json(the_plan), indent=2, sort_keys=False))
    elif view == "markdown":
        from declare.views.markdown import render_markdown

        typer.echo(render_markdown(the_plan), nl=False)
    else:
        echo(render_human(the_plan))


def confirm(auto_approve: bool, what: str, cancelled: str = "Apply cancelled.") -> None:
    """Ask before `what` is done; only the answer `yes` goes on.

    On a terminal the answer is prompted for. Without one (`echo yes | declare apply`, as
    Terraform users pipe it) one line is read from stdin. Any other answer, or none (end of
    input), prints `cancelled` and exits 1; `--auto-approve` skips the question.
    """
    if auto_approve:
        return
    echo(f"Do you want to perform these actions? declare will {what}.")
    question = "Only 'yes' will be accepted to approve"
    if _is_terminal(sys.stdin):
        answer = typer.prompt(question, default="", show_default=False)
    else:
        echo(f"{question} (reading the answer from standard input):")
        answer = _read_line(sys.stdin)
    if answer.strip() != "yes":
        echo(cancelled)
        if answer.strip():
            echo(f"(the answer was {answer.strip()[:40]!r}; only 'yes' approves)")
        raise typer.Exit(1)


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):  # closed
        return False


def _read_line(stream: TextIO | None) -> str:
    """One line of `stream`; '' at its end, or when there is none or it is closed."""
    try:
        return stream.readline() if stream is not None else ""
    except (OSError, ValueError, UnicodeDecodeError):
        return ""
