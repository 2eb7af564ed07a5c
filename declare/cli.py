"""The `declare` command line (Typer): the apps, the subcommands, and the one error handler.

Subcommands live in `declare.commands`, one module per group (core: validate, plan, apply,
destroy; inspect: show, status, state list/show, force-unlock, logs; fmt; graph; import;
state push/pull), registered by `register_all`. Every command takes the project folder as an
optional last argument (default: the current folder). Errors a user can cause are
`DeclareError`s, printed without a traceback; `main()` maps them to exit codes in one place:
0 success (plan: no changes), 1 error, 2 changes present (plan --detailed-exitcode).
Shell completion is typer's (`--install-completion`, `--show-completion`), for the name
`declare` however the CLI was started.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from declare import __version__
from declare.commands import register_all
from declare.commands._common import echo, err
from declare.errors import DeclareError

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
# The command's name whether it runs as `declare` or as `python -m declare`: usage lines and
# shell completion (`--show-completion` registers the completion of the name `declare`, and
# the completion script calls it with the variable _DECLARE_COMPLETE set) use it.
PROG_NAME = "declare"

app = typer.Typer(
    help="declare: Terraform-style deployment of ML model serving endpoints.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)
state_app = typer.Typer(
    help="Read the recorded state, or move it between backends (pull, push).",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
)
app.add_typer(state_app, name="state")
register_all(app, state_app)


def _version_callback(value: bool) -> None:
    if value:
        echo(f"declare {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print version."),
    ] = False,
) -> None:
    """declare: Terraform-style deployment of ML model serving endpoints."""


def _exception_types(name: str) -> tuple[type[BaseException], ...]:
    """The classes called `name` in click and in the click that typer vendors (typer 0.29+
    raises its own copies, typer before it raises click's): usage errors and aborts are
    caught whichever the installed typer raises."""
    found: list[type[BaseException]] = []
    for module in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
            found.append(cls)
    return tuple(found)


def main() -> None:
    """Entry point: run the app; map user errors to messages and exit codes."""
    usage_errors = _exception_types("ClickException")
    aborts = _exception_types("Abort")
    try:
        code = app(prog_name=PROG_NAME, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except DeclareError as exc:
        err(f"Error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err("Interrupted.")
        sys.exit(130)
    except usage_errors as exc:  # a mistyped command, option or argument
        exc.show()  # type: ignore[attr-defined]
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except aborts:
        err("Aborted.")
        sys.exit(1)


if __name__ == "__main__":
    main()
