"""`declare logs ENDPOINT [ENTITY] [PROJECT_DIR]`: the runtime's events of an endpoint, the
logs of its replicas, the kept logs of its stopped ones, and `--follow`.

What the state records decides which replicas are read: those of the endpoint (and served
entity). When it records none (a first apply that failed and was undone, replicas stopped
or replaced), the logs the endpoint's provider still keeps of stopped replicas are shown
instead, the newest few, each under a header saying it stopped and when
(`declare.provider.StoppedLogs`). An endpoint the state does not have is looked for in the
kept logs of every provider the project names.

`--follow` then prints the new lines of the replicas that run now, polling every 0.5 s and
re-reading the state, so a replacement started later is picked up; it ends at Ctrl-C (exit
0) or after the hidden `--follow-seconds`. Reading on is the provider's
(`declare.provider.LogFollowing`); this module never opens a provider's files.

What it does not do: change anything, or show logs of replicas other projects run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from declare.commands._common import echo
from declare.errors import ConfigError, DeclareError
from declare.model import ReplicaHandle
from declare.project import Project, open_project
from declare.provider import LogFollowing, Provider, StoppedLog, StoppedLogs
from declare.state.document import UPDATE_FAILED, EndpointRecord
from declare.state.scaling import utc

STOPPED_SHOWN = 3  # how many stopped replicas' logs are shown, newest first
POLL_SECONDS = 0.5


def split_positionals(entity: str | None, project_dir: Path | None) -> tuple[str | None, Path]:
    """(entity, project folder) from `ENDPOINT [ENTITY] [PROJECT_DIR]`: with one argument
    after the endpoint, it is the project folder when it names an existing folder, else an
    entity (an entity named like a folder here: give the folder too, `... ENTITY .`)."""
    if project_dir is None and entity is not None and Path(entity).is_dir():
        return None, Path(entity)
    return entity, project_dir if project_dir is not None else Path(".")


def stopped_header(log: StoppedLog) -> str:
    when = f" at {utc(log.stopped_at)}" if log.stopped_at is not None else ""
    return f"==> {log.replica_id} ({log.entity}), stopped{when} <=="


def _providers_for(project: Project, ep: EndpointRecord | None) -> list[Provider]:
    """The endpoint's provider; for an endpoint not in the state, every provider the project
    names (its default and those declare.yaml configures) that can be loaded."""
    if ep is not None:
        return [project.provider(ep.provider)]
    names = sorted({project.config.default_provider, *project.config.providers})
    found: list[Provider] = []
    for name in names:
        try:
            found.append(project.provider(name))
        except (DeclareError, ImportError):
            continue  # not installed or not usable here: it kept nothing we could read
    return found


def _stopped(
    providers: Iterable[Provider], endpoint: str, entity: str | None, tail: int
) -> list[StoppedLog]:
    logs: list[StoppedLog] = []
    for provider in providers:
        if isinstance(provider, StoppedLogs):
            logs.extend(provider.stopped_logs(endpoint, entity, tail))
    logs.sort(key=lambda log: log.stopped_at or 0.0, reverse=True)
    return logs[:STOPPED_SHOWN]


def _keeps_no_stopped_logs(providers: Iterable[Provider]) -> list[str]:
    return [p.name for p in providers if not isinstance(p, StoppedLogs)]


def _entity_error(ep: EndpointRecord, endpoint: str, entity: str) -> ConfigError:
    names = {e.name for e in ep.spec.entities} if ep.spec else set()
    names |= {e.name for e in ep.pending.entities} if ep.pending else set()
    known = ", ".join(sorted(names)) or "none"
    return ConfigError(f"endpoint {endpoint!r} has no served entity {entity!r}; known: {known}")


def _knows(ep: EndpointRecord, entity: str) -> bool:
    specs = [s for s in (ep.spec, ep.pending) if s is not None]
    return any(e.name == entity for s in specs for e in s.entities)


def _running(project: Project, endpoint: str, entity: str | None) -> list[ReplicaHandle]:
    ep = project.read_state().endpoints.get(endpoint)
    if ep is None:
        return []
    return [r.handle for r in ep.replicas if entity is None or r.entity == entity]


def show(project: Project, endpoint: str, entity: str | None, tail: int) -> list[ReplicaHandle]:
    """Print the events and logs of `endpoint`; return the handles of the replicas shown
    as running (where `--follow` reads on). Errors are raised before anything is printed."""
    state = project.read_state()
    ep = state.endpoints.get(endpoint)
    replicas = [r for r in (ep.replicas if ep else ()) if entity is None or r.entity == entity]
    providers = [] if replicas else _providers_for(project, ep)
    stopped = [] if replicas else _stopped(providers, endpoint, entity, tail)
    if ep is None and not stopped:
        known = ", ".join(sorted(state.endpoints)) or "none"
        raise ConfigError(
            f"no endpoint {endpoint!r} in the state, and no kept log of one; endpoints: {known}"
        )
    if ep is not None and entity is not None and not (replicas or stopped or _knows(ep, entity)):
        raise _entity_error(ep, endpoint, entity)
    if ep is not None:
        _show_events(ep, endpoint, entity, tail)
    for rep in replicas:
        echo(f"==> {rep.id} ({rep.entity}) <==")
        echo(project.provider(rep.handle.provider).logs(rep.handle, tail))
    if replicas:
        return [r.handle for r in replicas]
    what = repr(entity or endpoint)
    if not stopped:
        without = _keeps_no_stopped_logs(providers)
        note = (
            f"; provider {', '.join(without)} keeps no log of stopped replicas" if without else ""
        )
        echo(f"(no replica of {what} runs now, and no log of a stopped one is kept{note})")
        return []
    echo(f"(no replica of {what} runs now; the logs of the last {len(stopped)} stopped:)")
    for log in stopped:
        echo(stopped_header(log))
        echo(log.text)
    return []


def _show_events(ep: EndpointRecord, endpoint: str, entity: str | None, tail: int) -> None:
    events = [ev for ev in ep.events if entity is None or ev.entity == entity]
    if events and tail > 0:
        echo("==> runtime events <==")
        for ev in events[-tail:]:
            echo(f"{utc(ev.at)} {ev.entity} {ev.kind}: {ev.detail}")
    if ep.config_update == UPDATE_FAILED and ep.message:
        first = ep.message.splitlines()[0]  # its log follows below
        echo(f"(the last apply of {endpoint!r} failed: {first})")


@dataclass
class Follower:
    """Reads on the logs of the replicas that run now, each from where it was last read; a
    header names the replica whenever the lines printed come from another one than before,
    and a replica that stopped meanwhile has its last lines printed once."""

    running: Callable[[], list[ReplicaHandle]]
    provider_of: Callable[[ReplicaHandle], Provider]
    offsets: dict[str, int] = field(default_factory=dict)
    followed: dict[str, ReplicaHandle] = field(default_factory=dict)
    unsupported: set[str] = field(default_factory=set)
    last: str | None = None  # the replica whose lines were printed last

    def start(self, shown: Iterable[ReplicaHandle]) -> None:
        """Read on from the end of the logs just shown (their tail is already printed)."""
        for handle in shown:
            provider = self.provider_of(handle)
            if isinstance(provider, LogFollowing):
                self.offsets[handle.id] = provider.log_size(handle)
                self.followed[handle.id] = handle
            self.last = handle.id

    def poll(self) -> None:
        """Print what each running replica's log gained; a new replica from its start."""
        now = self.running()
        for gone in [h for i, h in self.followed.items() if i not in {n.id for n in now}]:
            self._read(gone, " (stopped)")
            del self.followed[gone.id]
        for handle in now:
            provider = self.provider_of(handle)
            if not isinstance(provider, LogFollowing):
                if provider.name not in self.unsupported:
                    self.unsupported.add(provider.name)
                    echo(f"(provider {provider.name} cannot follow logs; shown once above)")
                continue
            if handle.id not in self.followed:
                self.followed[handle.id] = handle
                self.offsets.setdefault(handle.id, 0)
                self._header(handle, ", started")
            self._read(handle, "")

    def _read(self, handle: ReplicaHandle, note: str) -> None:
        provider = self.provider_of(handle)
        if not isinstance(provider, LogFollowing):
            return
        text, self.offsets[handle.id] = provider.log_since(handle, self.offsets[handle.id])
        if text:
            if self.last != handle.id:
                self._header(handle, note)
            typer.echo(text, nl=False)

    def _header(self, handle: ReplicaHandle, note: str) -> None:
        echo(f"==> {handle.id} ({handle.entity}){note} <==")
        self.last = handle.id

    def run(self, seconds: float | None) -> None:
        """Poll until Ctrl-C or `seconds` (None: no bound)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while deadline is None or time.monotonic() < deadline:
                self.poll()
                time.sleep(POLL_SECONDS)
            self.poll()
        except KeyboardInterrupt:
            return


def logs(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    entity: Annotated[
        str | None,
        typer.Argument(help="Served entity name (default: all).", show_default=False),
    ] = None,
    project_dir: Annotated[
        Path | None,
        typer.Argument(help="Project folder (default: the current folder).", show_default=False),
    ] = None,
    project_opt: Annotated[
        Path | None, typer.Option("--project", "-C", hidden=True, help="Deprecated: PROJECT_DIR.")
    ] = None,
    tail: Annotated[int, typer.Option("--tail", help="Lines per replica.")] = 50,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Then print new lines of the running replicas."),
    ] = False,
    follow_seconds: Annotated[float | None, typer.Option("--follow-seconds", hidden=True)] = None,
) -> None:
    """Show the runtime's events of an endpoint and the logs of its replicas (of the last
    stopped ones when none runs); --follow prints new lines until Ctrl-C."""
    entity, folder = split_positionals(entity, project_dir)
    if project_opt is not None:
        if project_dir is not None and folder.resolve() != project_opt.resolve():
            raise ConfigError(f"two project folders: {project_opt} (-C) and {folder}")
        folder = project_opt
    project = open_project(folder)
    shown = show(project, endpoint, entity, tail)
    if not follow and follow_seconds is None:
        return
    follower = Follower(
        running=lambda: _running(project, endpoint, entity),
        provider_of=lambda handle: project.provider(handle.provider),
    )
    follower.start(shown)
    follower.run(follow_seconds)


def register(app: typer.Typer, state_app: typer.Typer) -> None:
    app.command()(logs)
