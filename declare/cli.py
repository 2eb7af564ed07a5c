"""The `declare` command line (Typer): the core flow and the one error handler.

This module holds validate, plan, apply and destroy; the other subcommands (show, status,
state list/show/push/pull, force-unlock, logs, fmt, graph, import) live in
`declare.commands`, one module each, registered by `register_all`. Every command takes
the project folder as an optional last argument (default: the current folder). Errors a
user can cause are `DeclareError`s, printed without a traceback; `main()` maps them to
exit codes in one place: 0 success (plan: no changes), 1 error, 2 changes present
(plan --detailed-exitcode).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from declare import __version__
from declare.commands import register_all
from declare.commands._common import (
    DirArg,
    FormatOpt,
    JsonOpt,
    LockTimeout,
    parse_duration,
)
from declare.commands._common import confirm as _confirm
from declare.commands._common import echo as _echo
from declare.commands._common import echo_plan as _echo_plan
from declare.commands._common import err as _err
from declare.commands._common import output_format as _output_format
from declare.diff import Change
from declare.errors import (
    ApplyFailedError,
    ConfigError,
    DeclareError,
    ManifestError,
    StaleStateError,
)
from declare.plan import Plan, render_human, saved
from declare.project import Planned, PlanOptions, Project, open_project
from declare.state.document import State

app = typer.Typer(
    help="declare: Terraform-style deployment of ML model serving endpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
state_app = typer.Typer(
    help="Read the recorded state, or move it between backends (pull, push).", no_args_is_help=True
)
app.add_typer(state_app, name="state")

# -- validate -----------------------------------------------------------------------------


@app.command()
def validate(project_dir: DirArg = Path("."), as_json: JsonOpt = False) -> None:
    """Check the manifests and declare.yaml against the schema (no registry, no state)."""
    try:
        project = open_project(project_dir)
        specs = project.load_specs()
    except ManifestError as exc:
        if as_json:
            _echo(json.dumps(_diagnostics(exc), indent=2))
            raise typer.Exit(1) from None
        raise
    if as_json:
        _echo(json.dumps({"valid": True, "error_count": 0, "diagnostics": []}, indent=2))
        return
    names = ", ".join(s.name for s in specs) or "none"
    _echo(f"Success! The configuration is valid: {len(specs)} endpoint(s) ({names}).")


def _diagnostics(exc: ManifestError) -> dict[str, Any]:
    return {
        "valid": False,
        "error_count": len(exc.problems),
        "diagnostics": [
            {
                "severity": "error",
                "file": p.location.file,
                "line": p.location.line,
                "field": p.location.field,
                "message": p.message,
            }
            for p in exc.problems
        ],
    }


# -- plan / apply / destroy --------------------------------------------------------------


TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="Plan only this endpoint (repeatable; Terraform's -target).",
        metavar="ENDPOINT",
    ),
]
ReplaceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--replace",
        help="Restart this served entity's replicas on purpose (repeatable).",
        metavar="ENDPOINT/ENTITY",
    ),
]
RefreshOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--refresh-only",
        help="Only make the state match what really runs (forget dead replicas); "
        "change nothing that runs.",
    ),
]


def _options(
    destroy: bool,
    targets: list[str] | None,
    replace: list[str] | None,
    refresh_only: bool,
) -> PlanOptions:
    pairs = set()
    for item in replace or []:
        endpoint, sep, entity = item.partition("/")
        if not sep or not endpoint or not entity:
            raise ConfigError(f"--replace {item!r}: write it as ENDPOINT/ENTITY, e.g. iris/iris-1")
        pairs.add((endpoint, entity))
    if refresh_only and (destroy or pairs):
        raise ConfigError("--refresh-only cannot be combined with --destroy or --replace")
    return PlanOptions(
        destroy=destroy,
        targets=frozenset(targets or ()),
        replace=frozenset(pairs),
        refresh_only=refresh_only,
    )


def _make_plan(project: Project, state: State, options: PlanOptions) -> Planned:
    specs = () if options.destroy else project.load_specs()
    project.check_providers(specs)
    project.check_secrets(specs)
    desired = project.resolve(specs)
    return project.plan(state, desired, options)


@app.command()
def plan(
    project_dir: DirArg = Path("."),
    as_json: JsonOpt = False,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 0: no changes, 1: error, 2: changes."),
    ] = False,
    destroy: Annotated[
        bool, typer.Option("--destroy", help="Plan to destroy every endpoint.")
    ] = False,
    lock_timeout: LockTimeout = "0s",
    output_format: FormatOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Save the plan; `declare apply FILE` runs exactly it.", metavar="FILE"
        ),
    ] = None,
    target: TargetOpt = None,
    replace: ReplaceOpt = None,
    refresh_only: RefreshOnlyOpt = False,
) -> None:
    """Show what apply would do: compare manifests, recorded state and what really runs."""
    view = _output_format(output_format, as_json)
    options = _options(destroy, target, replace, refresh_only)
    project = open_project(project_dir)
    with project.backend.locked("plan", parse_duration(lock_timeout)):
        state = project.read_state()
        planned = _make_plan(project, state, options)
    if out is not None:
        saved.write(
            saved.SavedPlan(
                plan=planned.plan,
                project=project.name,
                lineage=state.lineage,
                serial=state.serial,
                observed=planned.observed,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            ),
            out,
        )
    _echo_plan(planned.plan, view)
    if out is not None and view == "text":
        _echo(f"Saved the plan to {out}. To perform exactly these actions, run:")
        _echo(f"    declare apply {out}")
    if detailed_exitcode and planned.plan.has_changes:
        raise typer.Exit(2)


def _run_apply(
    project_dir: Path,
    auto_approve: bool,
    parallelism: int,
    lock_timeout: str,
    options: PlanOptions,
    plan_file: Path | None = None,
) -> None:
    if parallelism < 1:
        raise ConfigError("--parallelism must be at least 1")
    started = time.monotonic()
    project = open_project(project_dir)
    destroy = options.destroy
    operation = "destroy" if destroy else "apply"
    with project.backend.locked(operation, parse_duration(lock_timeout)):
        state = project.read_state()
        if plan_file is not None:
            the_plan = _load_fresh_plan(project, state, plan_file)
            destroy = the_plan.destroy
        else:
            the_plan = _make_plan(project, state, options).plan
            _echo(render_human(the_plan))
        if not the_plan.has_changes:
            _print_urls(project, project.read_state())
            return
        if plan_file is None:
            _confirm(auto_approve, "destroy every endpoint" if destroy else "apply this plan")
        from declare.apply import Executor

        executor = Executor(project, the_plan, state, _echo, parallelism)
        result = executor.run()
        final = executor.state
    _echo("")
    for err in result.global_errors:
        _err(f"Error: {err}")
    for outcome in result.endpoints:
        if not outcome.ok:
            _err(f"Error: endpoint.{outcome.name}: {outcome.error}")
            if outcome.change is not Change.DELETE:
                _err(
                    f"  endpoint {outcome.name} records UPDATE_FAILED; what ran before keeps "
                    "serving."
                )
    counts = {"add": 0, "change": 0, "destroy": 0}
    for outcome in result.endpoints:
        if outcome.ok:
            key = {"create": "add", "update": "change", "delete": "destroy"}[outcome.change.value]
            counts[key] += 1
    word = "Destroy" if destroy else "Apply"
    elapsed = time.monotonic() - started
    if result.ok:
        _echo(
            f"{word} complete! Endpoints: {counts['add']} added, {counts['change']} changed, "
            f"{counts['destroy']} destroyed. ({elapsed:.1f}s)"
        )
        _print_urls(project, final)
        return
    _err(
        f"{word} failed. Endpoints: {counts['add']} added, {counts['change']} changed, "
        f"{counts['destroy']} destroyed; {sum(not o.ok for o in result.endpoints)} failed."
    )
    raise ApplyFailedError(f"{word.lower()} failed")


def _load_fresh_plan(project: Project, state: State, plan_file: Path) -> Plan:
    """The saved plan, if it still fits the state and what runs; else StaleStateError."""
    loaded = saved.read(plan_file)
    if loaded.project != project.name:
        raise ConfigError(
            f"{plan_file} was made for project {loaded.project!r}, this is {project.name!r}: "
            "run apply in the folder the plan was made in, or give it as DIR"
        )
    now = project.observe(state, loaded.plan)
    reasons = saved.stale_reasons(loaded, state, now)
    if reasons:
        raise StaleStateError(
            f"the saved plan {plan_file} is stale; plan again. What changed since it was made:\n"
            + "\n".join(f"  - {r}" for r in reasons)
        )
    _echo(f"Applying the saved plan {plan_file} (made {loaded.created_at}).")
    return loaded.plan


def _print_urls(project: Project, state: State) -> None:
    if not state.endpoints:
        return
    _echo("")
    _echo("Invocation URLs:")
    for name in sorted(state.endpoints):
        _echo(f"  {name} = {project.invocation_url(name)}")


@app.command()
def apply(
    path: Annotated[
        Path,
        typer.Argument(
            help="A project folder (default: the current folder) or a saved plan file.",
            show_default=False,
        ),
    ] = Path("."),
    project_dir: Annotated[
        Path | None,
        typer.Argument(help="With a saved plan: the project folder.", show_default=False),
    ] = None,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Skip the confirmation prompt.")
    ] = False,
    parallelism: Annotated[int, typer.Option("--parallelism", help="Actions run at once.")] = 10,
    lock_timeout: LockTimeout = "0s",
    target: TargetOpt = None,
    replace: ReplaceOpt = None,
    refresh_only: RefreshOnlyOpt = False,
) -> None:
    """Plan, ask for confirmation, and carry the plan out with no dropped request.

    Given a saved plan (`declare plan --out FILE`), run exactly it, without a prompt, in the
    project folder DIR (default: the current folder); refuse it when the state or what runs
    moved on since it was made.
    """
    if path.is_file():
        if target or replace or refresh_only:
            raise ConfigError("a saved plan is applied as it is: drop --target/--replace")
        _run_apply(
            project_dir or Path("."),
            True,
            parallelism,
            lock_timeout,
            PlanOptions(),
            plan_file=path,
        )
        return
    if project_dir is not None:
        raise ConfigError(f"{path} is a folder: give either a project folder or a saved plan")
    _run_apply(
        path,
        auto_approve,
        parallelism,
        lock_timeout,
        _options(False, target, replace, refresh_only),
    )


@app.command()
def destroy(
    project_dir: DirArg = Path("."),
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Skip the confirmation prompt.")
    ] = False,
    parallelism: Annotated[int, typer.Option("--parallelism", help="Actions run at once.")] = 10,
    lock_timeout: LockTimeout = "0s",
    prune_images: Annotated[
        bool,
        typer.Option(
            "--prune-images",
            help="Also remove the images the project's replicas used (docker provider).",
        ),
    ] = False,
) -> None:
    """Stop every endpoint, replica and the gateway of the project."""
    names = _provider_names(project_dir) if prune_images else set()
    _run_apply(project_dir, auto_approve, parallelism, lock_timeout, PlanOptions(destroy=True))
    if prune_images:
        _prune_images(project_dir, names)


def _provider_names(project_dir: Path) -> set[str]:
    """Providers the project uses: in its state, its manifests and its default."""
    project = open_project(project_dir)
    state = project.read_state()
    names = {project.config.default_provider, *project.config.providers}
    names |= {ep.provider for ep in state.endpoints.values()}
    names |= {r.handle.provider for r in state.all_replicas()}
    with contextlib.suppress(DeclareError):
        names |= {spec.provider for spec in project.load_specs()}
    return names


def _prune_images(project_dir: Path, names: set[str]) -> None:
    from declare.provider import ImagePruning

    project = open_project(project_dir)
    for name in sorted(names):
        try:
            provider = project.provider(name)
        except ConfigError:
            continue  # a provider named in declare.yaml but not installed
        if isinstance(provider, ImagePruning):
            removed = provider.prune_images()
            _echo(
                f"{name}: removed {len(removed)} image(s){': ' if removed else ''}"
                + ", ".join(removed)
            )


register_all(app, state_app)


def _version_callback(value: bool) -> None:
    if value:
        _echo(f"declare {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print version."),
    ] = False,
) -> None:
    """declare: Terraform-style deployment of ML model serving endpoints."""


def main() -> None:
    """Entry point: run the app; map user errors to messages and exit codes."""
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except DeclareError as exc:
        _err(f"Error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err("Interrupted.")
        sys.exit(130)
    except Exception as exc:  # click's usage errors and aborts
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            _err("Aborted.")
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
