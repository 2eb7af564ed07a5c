"""What the manifests ask for, checked and pinned: the first three stages.

`load_desired(project)` loads and validates the manifests, checks that every provider they
name can work and that every secret reference can resolve (values are not read), and pins
every model in MLflow. Every problem of a stage is reported together, located at its file,
line and field. Reads files and MLflow; changes nothing.
"""

from __future__ import annotations

from declare import secrets
from declare.diff import DesiredEndpoint
from declare.errors import DeclareError, LocatedError, Location, ManifestError, ModelResolutionError
from declare.manifests import load_project_manifests
from declare.model import EndpointSpec, ResolvedModel
from declare.project import Project
from declare.provider import EntityChecks, replica_concurrency


def load_specs(project: Project) -> tuple[EndpointSpec, ...]:
    cfg = project.config
    return load_project_manifests(
        cfg.project_dir,
        include=cfg.manifest_include,
        exclude=cfg.manifest_exclude,
        default_provider=cfg.default_provider,
    )


def load_desired(project: Project) -> tuple[DesiredEndpoint, ...]:
    specs = load_specs(project)
    check_providers(project, specs)
    check_secrets(project, specs)
    return resolve(project, specs)


def resolve(project: Project, specs: tuple[EndpointSpec, ...]) -> tuple[DesiredEndpoint, ...]:
    """Pin every served entity's model; all failures reported together, located."""
    problems: list[LocatedError] = []
    out = []
    for spec in specs:
        models: dict[str, ResolvedModel] = {}
        for entity in spec.entities:
            try:
                models[entity.name] = project.resolver.resolve(entity.model_uri)
            except ModelResolutionError as exc:
                loc = entity.location or spec.location or Location(spec.name)
                problems.append(LocatedError(loc, str(exc)))
        if len(models) == len(spec.entities):
            per_replica = replica_concurrency(project.provider(spec.provider))
            out.append(DesiredEndpoint(spec, models, per_replica))
    if problems:
        raise ManifestError(problems)
    return tuple(out)


def check_providers(project: Project, specs: tuple[EndpointSpec, ...]) -> None:
    """Every provider the manifests use exists and can work, and can serve every entity
    given to it as the manifest asks (`EntityChecks`), before anything changes."""
    problems: list[LocatedError] = []
    for spec in specs:
        try:
            provider = project.provider(spec.provider)
            provider.check()
        except DeclareError as exc:
            loc = spec.location or Location(spec.name)
            problems.append(LocatedError(Location(loc.file, loc.line, "provider"), str(exc)))
            continue
        if not isinstance(provider, EntityChecks):
            continue
        for entity in spec.entities:
            loc = entity.location or spec.location or Location(spec.name)
            for field, message in provider.entity_problems(entity):
                problems.append(LocatedError(Location(loc.file, loc.line, field), message))
    if problems:
        raise ManifestError(problems)


def check_secrets(project: Project, specs: tuple[EndpointSpec, ...]) -> None:
    """Every `{{secrets/...}}` reference can be resolved at apply time (values not read)."""
    problems: list[LocatedError] = []
    for spec in specs:
        for entity in spec.entities:
            for name, source in secrets.missing(entity.environment_vars, project.environ):
                loc = entity.location or spec.location or Location(spec.name)
                problems.append(
                    LocatedError(
                        Location(loc.file, loc.line, f"environment_vars.{name}"),
                        f"refers to a secret: set {source} in declare's environment",
                    )
                )
    if problems:
        raise ManifestError(problems)
