"""The core flow: `validate`, `plan`, `apply`, `destroy` (argument parsing only).

Each command opens the project, takes the state lock, and hands the work to the engine
(manifests to a plan), the executor (a plan carried out) and the views (what is printed).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from declare import engine
from declare.apply import Executor
from declare.commands._common import (
    DirArg,
    FormatOpt,
    JsonOpt,
    LockTimeout,
    confirm,
    echo,
    echo_plan,
    output_format,
    parse_duration,
)
from declare.engine import PlanOptions
from declare.engine.desired import load_specs
from declare.errors import ApplyFailedError, ConfigError, DeclareError, ManifestError
from declare.plan import Plan, saved
from declare.project import Project, open_project
from declare.provider import HelperProcesses, ImagePruning, Provider
from declare.state.document import State
from declare.views.apply import ApplyView, HumanApplyView, JsonApplyView

# -- validate -----------------------------------------------------------------------------


def validate(project_dir: DirArg = Path("."), as_json: JsonOpt = False) -> None:
    """Check the manifests and declare.yaml against the schema (no registry, no state)."""
    try:
        specs = load_specs(open_project(project_dir))
    except ManifestError as exc:
        if as_json:
            echo(json.dumps(_diagnostics(exc), indent=2))
            raise typer.Exit(1) from None
        raise
    if as_json:
        echo(json.dumps({"valid": True, "error_count": 0, "diagnostics": []}, indent=2))
        return
    names = ", ".join(s.name for s in specs) or "none"
    echo(f"Success! The configuration is valid: {len(specs)} endpoint(s) ({names}).")


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


# -- plan -----------------------------------------------------------------------------------

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
AutoApprove = Annotated[bool, typer.Option("--auto-approve", help="Skip the confirmation prompt.")]
Parallelism = Annotated[int, typer.Option("--parallelism", help="Actions run at once.")]
ApplyJson = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Stream one JSON object per line (plan, each action, the outcome); "
        "needs --auto-approve or a saved plan.",
    ),
]


def plan_options(
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
    fmt: FormatOpt = None,
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
    view = output_format(fmt, as_json)
    options = plan_options(destroy, target, replace, refresh_only)
    project = open_project(project_dir)
    with project.backend.locked("plan", parse_duration(lock_timeout)):
        state = project.read_state()
        proposal = engine.make_plan(project, state, options)
    if out is not None:
        saved.write(
            saved.PlanFile(
                plan=proposal.plan,
                project=project.name,
                lineage=state.lineage,
                serial=state.serial,
                observed=proposal.observed,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            ),
            out,
        )
    echo_plan(proposal.plan, view)
    if out is not None and view == "text":
        echo(f"Saved the plan to {out}. To perform exactly these actions, run:")
        echo(f"    declare apply {out}")
    if detailed_exitcode and proposal.plan.has_changes:
        raise typer.Exit(2)


# -- apply / destroy ------------------------------------------------------------------------


def _view(as_json: bool) -> ApplyView:
    return JsonApplyView() if as_json else HumanApplyView()


def run_apply(
    project_dir: Path,
    options: PlanOptions,
    *,
    auto_approve: bool,
    parallelism: int,
    lock_timeout: str,
    as_json: bool = False,
    plan_file: Path | None = None,
) -> None:
    """Plan (or read the saved plan), confirm, execute, report; ApplyFailedError on failure."""
    if parallelism < 1:
        raise ConfigError("--parallelism must be at least 1")
    if as_json and not auto_approve and plan_file is None:
        raise ConfigError("--json cannot ask for confirmation: add --auto-approve")
    started = time.monotonic()
    project = open_project(project_dir)
    view = _view(as_json)
    operation = "destroy" if options.destroy else "apply"
    with project.backend.locked(operation, parse_duration(lock_timeout)):
        state = project.read_state()
        the_plan = _plan_to_apply(project, state, options, view, plan_file)
        if not the_plan.has_changes:
            view.no_changes(_urls(project, state))
            return
        if plan_file is None:
            if the_plan.destroy:
                confirm(auto_approve, "destroy every endpoint", "Destroy cancelled.")
            else:
                confirm(auto_approve, "apply this plan", "Apply cancelled.")
        executor = Executor(project, the_plan, state, hooks=view, parallelism=parallelism)
        try:
            result = executor.run()
        finally:
            view.close()
    view.outcome(
        result, the_plan.destroy, time.monotonic() - started, _urls(project, executor.state)
    )
    if not result.ok:
        raise ApplyFailedError(f"{operation} failed")


def _plan_to_apply(
    project: Project, state: State, options: PlanOptions, view: ApplyView, plan_file: Path | None
) -> Plan:
    if plan_file is None:
        the_plan = engine.make_plan(project, state, options).plan
        view.plan(the_plan)
        return the_plan
    loaded = engine.saved_plan(project, state, plan_file)
    view.plan(loaded.plan, f"Applying the saved plan {plan_file} (made {loaded.created_at}).")
    return loaded.plan


def _urls(project: Project, state: State) -> dict[str, str]:
    """The invocation URL of each endpoint that is routed (one whose first apply failed
    serves nothing: no URL for it)."""
    return {name: project.invocation_url(name) for name, ep in state.endpoints.items() if ep.routes}


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
    auto_approve: AutoApprove = False,
    parallelism: Parallelism = 10,
    lock_timeout: LockTimeout = "0s",
    target: TargetOpt = None,
    replace: ReplaceOpt = None,
    refresh_only: RefreshOnlyOpt = False,
    as_json: ApplyJson = False,
) -> None:
    """Plan, ask for confirmation, and carry the plan out with no dropped request.

    Given a saved plan (`declare plan --out FILE`), run exactly it, without a prompt, in the
    project folder DIR (default: the current folder); refuse it when the state or what runs
    moved on since it was made.
    """
    if path.is_file():
        if target or replace or refresh_only:
            raise ConfigError("a saved plan is applied as it is: drop --target/--replace")
        run_apply(
            project_dir or Path("."),
            PlanOptions(),
            auto_approve=True,
            parallelism=parallelism,
            lock_timeout=lock_timeout,
            as_json=as_json,
            plan_file=path,
        )
        return
    if project_dir is not None:
        raise ConfigError(f"{path} is a folder: give either a project folder or a saved plan")
    run_apply(
        path,
        plan_options(False, target, replace, refresh_only),
        auto_approve=auto_approve,
        parallelism=parallelism,
        lock_timeout=lock_timeout,
        as_json=as_json,
    )


def destroy(
    project_dir: DirArg = Path("."),
    auto_approve: AutoApprove = False,
    parallelism: Parallelism = 10,
    lock_timeout: LockTimeout = "0s",
    prune_images: Annotated[
        bool,
        typer.Option(
            "--prune-images",
            help="Also remove the images the project's replicas used (docker provider).",
        ),
    ] = False,
    as_json: ApplyJson = False,
) -> None:
    """Stop every endpoint, replica and the gateway of the project."""
    names = _provider_names(project_dir)
    run_apply(
        project_dir,
        PlanOptions(destroy=True),
        auto_approve=auto_approve,
        parallelism=parallelism,
        lock_timeout=lock_timeout,
        as_json=as_json,
    )
    _stop_helpers(project_dir, names)
    if prune_images:
        _prune_images(project_dir, names)


def _installed_providers(project_dir: Path, names: set[str]) -> Iterator[tuple[str, Provider]]:
    """The providers named in `names` that are installed (a provider named in declare.yaml
    but not installed is left out), in name order."""
    project = open_project(project_dir)
    for name in sorted(names):
        try:
            yield name, project.provider(name)
        except ConfigError:
            continue


def _stop_helpers(project_dir: Path, names: set[str]) -> None:
    """Stop the helper processes of each provider left with no replica of the project."""
    for _, provider in _installed_providers(project_dir, names):
        with contextlib.suppress(DeclareError):
            if isinstance(provider, HelperProcesses) and not provider.list_owned():
                provider.stop_helpers()


def _provider_names(project_dir: Path) -> set[str]:
    """Providers the project uses: in its state, its manifests and its default."""
    project = open_project(project_dir)
    state = project.read_state()
    names = {project.config.default_provider, *project.config.providers}
    names |= {ep.provider for ep in state.endpoints.values()}
    names |= {r.handle.provider for r in state.all_replicas()}
    with contextlib.suppress(DeclareError):
        names |= {spec.provider for spec in load_specs(project)}
    return names


def _prune_images(project_dir: Path, names: set[str]) -> None:
    for name, provider in _installed_providers(project_dir, names):
        if isinstance(provider, ImagePruning):
            removed = provider.prune_images()
            echo(
                f"{name}: removed {len(removed)} image(s){': ' if removed else ''}"
                + ", ".join(removed)
            )


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(plan)
    app.command()(apply)
    app.command()(destroy)
