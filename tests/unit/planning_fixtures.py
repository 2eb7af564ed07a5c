"""Small builders of immutable values for the pure diff/plan tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from declare.diff import Actual, DesiredEndpoint, EndpointChange
from declare.model import EndpointSpec, EntitySpec, ReplicaHandle, ResolvedModel, Route
from declare.plan import GatewayInput, PlanInput, build_plan
from declare.plan.actions import Plan
from declare.provider import BuildInfo, Liveness, ReplicaStatus
from declare.state.document import EndpointRecord, ReplicaRecord, State


def model(name: str = "iris", version: str = "1") -> ResolvedModel:
    return ResolvedModel(
        uri=f"models:/{name}/{version}",
        pinned_uri=f"models:/{name}/{version}",
        name=name,
        version=version,
        source=f"file:///artifacts/{name}/{version}",
        input_example="serving_input_example.json",
        env_hash="env1",
    )


def entity(version: str = "1", size: str = "Small", **kw: object) -> EntitySpec:
    return EntitySpec(
        name=f"iris-{version}",
        model_uri=f"models:/iris/{version}",
        entity_name="iris",
        entity_version=version,
        workload_size=size,
        **kw,  # type: ignore[arg-type]
    )


def desired(*versions_pcts: tuple[str, int], size: str = "Small", **kw: object) -> DesiredEndpoint:
    ents = tuple(entity(v, size, **kw) for v, _ in versions_pcts)
    routes = tuple(Route(f"iris-{v}", p) for v, p in versions_pcts)
    spec = EndpointSpec(name="iris", entities=ents, routes=routes)
    return DesiredEndpoint(spec, {e.name: model("iris", e.entity_version or "") for e in ents})


def applied(d: DesiredEndpoint, alive: bool = True) -> tuple[State, Actual]:
    """The state and actual world right after `d` was applied successfully."""
    replicas = []
    for e in d.spec.entities:
        gen = d.generation(e)
        for i in range(e.replica_count):
            h = ReplicaHandle(
                id=f"iris-{e.name}-{i}",
                provider="local",
                endpoint="iris",
                entity=e.name,
                generation=gen,
                url=f"http://127.0.0.1:{5000 + i}",
            )
            replicas.append(ReplicaRecord(h, i, ready=True))
    rec = EndpointRecord(
        name="iris",
        provider="local",
        spec=d.spec,
        models=d.models,
        routes=d.spec.routes,
        serving=d.serving,
        replicas=tuple(replicas),
        config_version=1,
    )
    state = State(serial=3, lineage="l", endpoints={"iris": rec})
    from declare.routing import routing_table

    actual = Actual(
        replicas={
            r.id: ReplicaStatus(r.handle, Liveness.ALIVE if alive else Liveness.DEAD, "exited 1")
            for r in replicas
        },
        gateway_running=True,
        gateway_settings_hash="gw",
        gateway_table=routing_table(state, 1),
    )
    return state, actual


def plan_of(
    changes: Sequence[EndpointChange],
    *,
    running: bool = True,
    recorded: str | None = "gw",
    builds: Mapping[str, BuildInfo] | None = None,
) -> Plan:
    """The plan of `changes` for project `p`, its gateway on 127.0.0.1:8787 (settings hash
    `gw`; `running` and the `recorded` hash as given)."""
    return build_plan(
        PlanInput(
            project="p",
            changes=tuple(changes),
            gateway=GatewayInput(running, "127.0.0.1", 8787, "gw", recorded),
            builds=dict(builds or {}),
        )
    )
