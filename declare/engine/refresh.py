"""What really runs: the refresh stage (Terraform's refresh), read through the boundaries.

`refresh` asks each provider about every recorded replica (alive or dead, and why), lists
what each provider holds under the project's labels (orphans: unknown to the state) and asks
about each of them too (an alive orphan that matches the manifests is adopted, see
`declare.diff`), and reads the gateway's live routing table and the settings it says it was
started with. `builds` asks each provider what serving each
desired entity needs built and whether it is cached. Changes nothing.
"""

from __future__ import annotations

from declare.diff import Actual, DesiredEndpoint
from declare.gateway.table import RoutingTable
from declare.model import ReplicaHandle
from declare.project import Project
from declare.provider import BuildInfo, ReplicaStatus
from declare.state.document import State, generation_of


def refresh(project: Project, state: State, desired: tuple[DesiredEndpoint, ...] = ()) -> Actual:
    statuses: dict[str, ReplicaStatus] = {}
    for record in state.all_replicas():
        statuses[record.id] = project.provider(record.handle.provider).status(record.handle)
    known = {r.id for r in state.all_replicas()}
    names = {d.spec.provider for d in desired} | {r.handle.provider for r in state.all_replicas()}
    names |= {ep.provider for ep in state.endpoints.values()}
    orphans: list[ReplicaHandle] = []
    for name in sorted(names):
        orphans += [h for h in project.provider(name).list_owned() if h.id not in known]
    for h in orphans:
        statuses[h.id] = project.provider(h.provider).status(h)
    admin = project.gateway.admin()
    table: RoutingTable | None = None
    if admin is not None:
        with admin:
            table = admin.get_table()
    return Actual(
        replicas=statuses,
        orphans=tuple(orphans),
        gateway_running=admin is not None,
        gateway_settings_hash=project.gateway_settings().hash,
        gateway_table=table,
        runtime_running=project.runtime.status() is not None,
        gateway_started_hash=project.gateway.settings_hash() if admin is not None else None,
    )


def builds(project: Project, desired: tuple[DesiredEndpoint, ...]) -> dict[str, BuildInfo]:
    out: dict[str, BuildInfo] = {}
    for d in desired:
        provider = project.provider(d.spec.provider)
        for e in d.spec.entities:
            gen = generation_of(d.spec.provider, d.models[e.name], e.to_json())
            out[gen] = provider.build_info(d.models[e.name], e.workload_type)
    return out
