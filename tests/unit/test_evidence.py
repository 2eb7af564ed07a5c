"""Evidence before traffic moves (pure): answers compared row by row, the bounds' verdict,
and the replay and shadow steps in the plan, its JSON and saved form."""

from __future__ import annotations

from dataclasses import replace

import networkx as nx
import pytest

from declare.diff import diff
from declare.model import Bounds, Evidence, RolloutPolicy, rollout_problems, verdict
from declare.model.agreement import compare, p99, rows_of, same
from declare.plan import GatewayInput, PlanInput, build_plan
from declare.plan.actions import ActionKind, Plan, Replay, Shadow
from declare.plan.codec import action_from_json, action_to_json
from declare.views.plan import render_human
from tests.unit.planning_fixtures import applied, desired

CAPTURE = {"auto_capture_config": {"enabled": True, "catalog_name": "ml", "schema_name": "s"}}


def _rolled(d, rollout, extra=None):  # type: ignore[no-untyped-def]
    spec = replace(d.spec, rollout=RolloutPolicy.from_manifest(rollout))
    if extra is not None:
        spec = replace(spec, extra=extra)
    return replace(d, spec=spec)


def _plan(before, after, captured: int = 0) -> Plan:  # type: ignore[no-untyped-def]
    state, actual = applied(before)
    changes = diff([after], state, actual, "gw")
    return build_plan(
        PlanInput(
            project="p",
            changes=tuple(changes),
            gateway=GatewayInput(True, "127.0.0.1", 8787, "gw", "gw"),
            captured={"iris": captured},
        )
    )


# -- answers compared -------------------------------------------------------------------


def test_rows_of_reads_mlflow_answer_shapes() -> None:
    assert rows_of(b'{"predictions": [1, 2]}') == [1, 2]
    assert rows_of(b'{"outputs": [[0.1, 0.9]]}') == [[0.1, 0.9]]
    assert rows_of(b"[3]") == [3]
    assert rows_of(b'{"a": 1, "b": 2}') == [{"a": 1, "b": 2}]
    assert rows_of(b"not json") is None


def test_numbers_agree_within_tolerance_and_types_must_match() -> None:
    assert same(1.0, 1.0 + 1e-9, 1e-6)
    assert not same(1.0, 1.1, 1e-6)
    assert same(float("nan"), float("nan"), 0.0)
    assert not same(True, 1, 0.0)  # a boolean is not the number 1
    assert not same("1", 1, 0.0)
    assert same({"p": [0.5, "x"]}, {"p": [0.5 + 1e-12, "x"]}, 1e-9)
    assert not same([1, 2], [1, 2, 3], 0.0)


def test_compare_counts_differing_rows() -> None:
    a = compare(b'{"predictions": [0, 1, 2, 2]}', b'{"predictions": [0, 1, 1, 2]}', 0.0)
    assert (a.rows, a.differing) == (4, 1)
    # a candidate answer of another shape differs in every row
    assert compare(b'{"predictions": [0, 1]}', b'{"predictions": [0]}', 0.0).differing == 2
    assert compare(b'{"predictions": [0, 1]}', b"oops", 0.0).differing == 2


def test_p99_nearest_rank() -> None:
    assert p99([]) == 0.0
    assert p99([float(x) for x in range(1, 101)]) == 99.0
    assert p99([5.0]) == 5.0


# -- the verdict ------------------------------------------------------------------------


def test_verdict_names_the_bound_and_the_figures() -> None:
    bounds = Bounds(max_disagreement=0.01, max_error_rate=0.0, max_p99_ratio=2.0)
    assert verdict(bounds, "iris-2", Evidence(100, 0, 100, 1, 3.0, 2.0)) == ""
    why = verdict(bounds, "iris-2", Evidence(100, 0, 100, 40, 3.0, 2.0))
    assert "iris-2 answered 40 of 100 rows differently" in why and "0.01" in why
    assert "failed 1 of 100" in verdict(bounds, "iris-2", Evidence(100, 1, 99, 0, 1.0, 1.0))
    assert "2.50x" in verdict(bounds, "iris-2", Evidence(100, 0, 100, 0, 5.0, 2.0))
    # bounds set to None are not judged
    assert verdict(Bounds(None, 0.0, None, None), "x", Evidence(10, 10, 10, 10, 9, 1)) == ""


def test_policies_read_from_the_manifest_with_defaults() -> None:
    policy = RolloutPolicy.from_manifest(
        {"replay": {"requests": 50, "max_p99_ratio": 3}, "shadow": {"percent": 25}}
    )
    assert policy.replay is not None and policy.shadow is not None
    assert (policy.replay.requests, policy.replay.min_requests) == (50, 20)
    assert policy.replay.bounds == Bounds(0.0, 1e-6, 0.0, 3.0)
    assert (policy.shadow.percent, policy.shadow.seconds) == (25, 60.0)
    assert RolloutPolicy.from_json(policy.to_json()) == policy
    # a policy without them keeps its JSON as before they existed (no spurious diff)
    assert "replay" not in RolloutPolicy.from_manifest({"strategy": "canary"}).to_json()
    assert rollout_problems({"replay": {"requests": 10, "min_requests": 20}}) == [
        (("replay", "min_requests"), "20 is more than requests (10)")
    ]


# -- the plan ---------------------------------------------------------------------------


def test_replay_and_shadow_come_before_any_traffic_moves() -> None:
    rollout = {"strategy": "canary", "steps": [50, 100], "replay": {}, "shadow": {"seconds": 5}}
    before = _rolled(desired(("1", 100)), None, CAPTURE)
    after = _rolled(desired(("2", 100)), rollout, CAPTURE)
    plan = _plan(before, after, captured=500)
    kinds = [a.kind for a in plan.actions]
    assert kinds[:4] == [
        ActionKind.START_REPLICA,
        ActionKind.AWAIT_READY,
        ActionKind.REPLAY,
        ActionKind.SHADOW,
    ]
    g = plan.graph()
    assert nx.has_path(g, "endpoint.iris.entity[iris-2].replica[0].ready", "endpoint.iris.replay")
    assert nx.has_path(g, "endpoint.iris.replay", "endpoint.iris.shadow")
    assert nx.has_path(g, "endpoint.iris.shadow", "endpoint.iris.shift[1]")
    replay = plan.action("endpoint.iris.replay").payload
    assert isinstance(replay, Replay) and replay.skip == ""
    gen_1 = before.serving["iris-1"]
    assert replay.pairs == (("iris-2", after.serving["iris-2"], "iris-1", gen_1),)
    assert replay.capture is not None and replay.capture.table_name == "ml.s.iris_payload"
    shadow = plan.action("endpoint.iris.shadow").payload
    assert isinstance(shadow, Shadow) and shadow.pair == replay.pairs[0]
    text = render_human(plan)
    assert "replay the newest 100 captured requests (of 500): iris-2 against iris-1" in text
    assert "shadow 100% of live requests to iris-2 for 5s, users answered as now" in text


def test_replay_compares_an_entity_with_its_own_serving_generation() -> None:
    before = _rolled(desired(("1", 80), ("3", 20)), None, CAPTURE)
    # iris-3's model changes (a new generation of the same entity); iris-1 stays
    after = _rolled(desired(("1", 80), ("3", 20)), {"replay": {}}, CAPTURE)
    after = replace(
        after,
        models={
            **after.models,
            "iris-3": replace(after.models["iris-3"], version="9", pinned_uri="models:/iris/9"),
        },
    )
    plan = _plan(before, after, captured=100)
    replay = plan.action("endpoint.iris.replay").payload
    assert isinstance(replay, Replay)
    ((cand, _, serving, serving_gen),) = replay.pairs
    assert (cand, serving, serving_gen) == ("iris-3", "iris-3", before.serving["iris-3"])


def test_too_few_captured_requests_skip_the_replay_saying_why() -> None:
    before = _rolled(desired(("1", 100)), None, CAPTURE)
    after = _rolled(desired(("2", 100)), {"replay": {"when_insufficient": "skip"}}, CAPTURE)
    replay = _plan(before, after, captured=3).action("endpoint.iris.replay")
    assert isinstance(replay.payload, Replay)
    assert replay.payload.skip == (
        "its inference table ml.s.iris_payload holds 3 replayable requests, fewer than "
        "min_requests 20"
    )
    assert replay.summary.startswith("replay skipped: ")
    no_capture = _plan(desired(("1", 100)), after, captured=0).action("endpoint.iris.replay")
    assert isinstance(no_capture.payload, Replay)
    assert "captures no requests" in no_capture.payload.skip


def test_a_new_endpoint_has_nothing_to_compare_with() -> None:
    state, actual = applied(desired(("1", 100)))
    after = _rolled(desired(("1", 100)), {"replay": {}, "shadow": {}}, CAPTURE)
    fresh = replace(after, spec=replace(after.spec, name="other"))
    plan = build_plan(
        PlanInput(
            project="p",
            changes=tuple(diff([after, fresh], state, actual, "gw")),
            gateway=GatewayInput(True, "127.0.0.1", 8787, "gw", "gw"),
        )
    )
    assert not [a for a in plan.actions if a.kind in (ActionKind.REPLAY, ActionKind.SHADOW)]


@pytest.mark.parametrize("kind", ["replay", "shadow"])
def test_evidence_actions_survive_a_saved_plan(kind: str) -> None:
    rollout = {"replay": {"requests": 7, "max_p99_ratio": 2}, "shadow": {"percent": 10}}
    before = _rolled(desired(("1", 100)), None, CAPTURE)
    plan = _plan(before, _rolled(desired(("2", 100)), rollout, CAPTURE), captured=50)
    action = plan.action(f"endpoint.iris.{kind}")
    assert action_from_json(action_to_json(action)) == action


def test_a_recorded_shadow_reaches_the_routing_table_and_drift_sees_it_missing() -> None:
    from declare.routing import routes_as_expected, routing_table
    from declare.state.document import ReplicaRecord, ShadowRoute

    before = desired(("1", 100))
    state, _ = applied(before)
    record = state.endpoints["iris"]
    candidate = replace(record.replicas[0].handle, id="cand-0", generation="feedbeef" * 8)
    record = record.with_replica(ReplicaRecord(candidate, 0, ready=True))
    shadowed = replace(record, shadow=ShadowRoute("iris-2", "feedbeef" * 8, 25, 1e-6, "iris", "2"))
    # the candidate is of another entity in this record: derive for its own entity name
    shadowed = replace(
        shadowed,
        replicas=tuple(
            replace(r, handle=replace(r.handle, entity="iris-2")) if r.id == "cand-0" else r
            for r in shadowed.replicas
        ),
    )
    table = routing_table(replace(state, endpoints={"iris": shadowed}), 1)
    target = table.endpoints["iris"].shadow
    assert target is not None
    assert (target.key, target.served_name, target.percent) == ("iris-2@feedbeef", "iris-2", 25)
    assert [t.id for t in target.replicas] == ["cand-0"]
    assert (target.model.name, target.model.version) == ("iris", "2")
    assert table.endpoints["iris"].routes == (("iris-1", 100),)  # users' routing unchanged
    # a gateway that lost the shadow does not route as the state says
    unshadowed = routing_table(replace(state, endpoints={"iris": record}), 1).endpoints["iris"]
    assert routes_as_expected(shadowed, table.endpoints["iris"])
    assert not routes_as_expected(shadowed, unshadowed)
    # the record round-trips through JSON with its shadow
    from declare.state.document import EndpointRecord

    assert EndpointRecord.from_json(shadowed.to_json()) == shadowed


def test_a_state_with_a_shadow_and_evidence_policies_passes_its_schema() -> None:
    from declare.errors import StateDocumentError
    from declare.state.document import ShadowRoute
    from declare.state.schema import check_document

    rollout = {"replay": {"requests": 5, "min_requests": 5}, "shadow": {"percent": 10}}
    state, _ = applied(_rolled(desired(("1", 100)), rollout, CAPTURE))
    record = replace(state.endpoints["iris"], shadow=ShadowRoute("iris-2", "ab" * 32, 10, 0.0))
    doc = replace(state, endpoints={"iris": record}).to_json()
    check_document(doc, "s.json")
    doc["endpoints"]["iris"]["shadow"]["percent"] = 0
    with pytest.raises(StateDocumentError, match=r"endpoints\.iris\.shadow\.percent"):
        check_document(doc, "s.json")
