"""`declare state push FILE [DIR]` and `declare state pull [DIR]`: move state between backends.

    declare state pull old-project > state.json        # any backend -> a file (stdout)
    declare state push state.json new-project          # a file -> the configured backend

`pull` prints the stored state document as JSON (the local backend's file format, byte for
byte); with no state stored it prints nothing and says so on stderr, as Terraform does.
`push` writes a state file into the project's backend, by Terraform's rules for
`state push` (`push_document`, pure): refused when the file's lineage differs from the
stored one, when its serial is lower, or when it has the same serial but other content.
`--force` pushes anyway: the file's content becomes the next state of the *stored*
lineage (serial = stored + 1), so the backend's history stays one line (the postgres
backend keeps every earlier state; the local one keeps a backup copy). Otherwise the
stored serial is the file's + 1 (a backend gives each serial once). Both take the state
lock. Neither reads manifests, MLflow or providers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from declare.commands._common import DirArg, LockTimeout
from declare.errors import ConfigError, StaleStateError, StateError
from declare.state.backend import HEADER_KEYS, check_state, encode_state
from declare.state.schema import check_document


def push_document(
    stored: Mapping[str, Any] | None, pushed: Mapping[str, Any], force: bool, where: str
) -> dict[str, Any] | None:
    """The document to `write` for pushing `pushed` over `stored`; None: nothing to do.

    Raises StaleStateError (naming `--force`) where Terraform's `state push` refuses.
    """
    if stored is None:
        return dict(pushed)
    serial, lineage = pushed["serial"], pushed["lineage"]
    stored_serial, stored_lineage = stored["serial"], stored["lineage"]
    payload = {k: v for k, v in pushed.items() if k not in HEADER_KEYS}
    stored_payload = {k: v for k, v in stored.items() if k not in HEADER_KEYS}
    problem = None
    if lineage != stored_lineage:
        problem = (
            f"the file's lineage {lineage} differs from the lineage {stored_lineage} of "
            f"the state at {where} (serial {stored_serial}): they are different states' "
            "histories"
        )
    elif serial < stored_serial:
        problem = (
            f"the file has serial {serial}, older than serial {stored_serial} stored at "
            f"{where}: pushing it would lose the writes since"
        )
    elif serial == stored_serial and payload != stored_payload:
        problem = (
            f"the file has serial {serial}, the same as the state at {where}, but other content"
        )
    elif serial == stored_serial:
        return None
    if problem is None:
        return dict(pushed)
    if not force:
        raise StaleStateError(
            f"refusing to push: {problem}. Check that this is the state you mean, then push "
            "it with --force to replace the stored state."
        )
    return {**payload, "serial": stored_serial, "lineage": stored_lineage}


def read_state_file(path: Path) -> dict[str, Any]:
    """A state document from a JSON file, every field checked; ConfigError/StateError naming
    the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such state file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{path} is not a state file: not JSON ({exc})") from None
    doc = check_state(data, str(path))
    check_document(doc, str(path), f"Nothing was pushed. Correct the field in {path}.")
    return doc


def state_pull(project_dir: DirArg = Path("."), lock_timeout: LockTimeout = "0s") -> None:
    """Print the stored state as JSON (to move it to another backend with push)."""
    # declare.cli imports this module while it registers its commands: import it here.
    from declare.commands._common import parse_duration
    from declare.project import open_project

    backend = open_project(project_dir).backend
    with backend.locked("state pull", parse_duration(lock_timeout)):
        doc = backend.read()
    if doc is None:
        typer.echo(f"No state is stored at {backend.location}.", err=True)
        return
    typer.echo(encode_state(doc, backend.location).decode("utf-8"), nl=False)


def state_push(
    file: Annotated[
        Path, typer.Argument(help="A state JSON file, e.g. from `declare state pull`.")
    ],
    project_dir: DirArg = Path("."),
    force: Annotated[
        bool,
        typer.Option("--force", help="Push even over another lineage or a newer serial."),
    ] = False,
    lock_timeout: LockTimeout = "0s",
) -> None:
    """Write a state file into the project's state backend (refuses to lose writes)."""
    from declare.commands._common import parse_duration
    from declare.project import open_project

    pushed = read_state_file(file)
    backend = open_project(project_dir).backend
    with backend.locked("state push", parse_duration(lock_timeout)):
        doc = push_document(backend.read(), pushed, force, backend.location)
        if doc is None:
            typer.echo(
                f"{backend.location} already holds this state (serial {pushed['serial']}, "
                f"lineage {pushed['lineage']}); nothing pushed."
            )
            return
        stored = backend.write(doc)
    typer.echo(
        f"Pushed {file} to {backend.location}: now serial {stored['serial']}, "
        f"lineage {stored['lineage']}."
    )


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    state_app.command("pull")(state_pull)
    state_app.command("push")(state_push)
