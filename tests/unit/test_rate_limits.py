"""Rate limits: the fixed-window limiter, which manifest entries are enforced, and how a
change of `rate_limits` reaches the gateway (a live route push, no restart)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from declare.config import load_config
from declare.describe import describe
from declare.diff import diff
from declare.errors import ManifestError
from declare.gateway.limits import RateLimiter
from declare.gateway.table import RoutingTable
from declare.manifests import load_project_manifests
from declare.model import RateLimit, manifest_limits
from declare.plan.actions import ActionKind
from declare.routing import routing_table
from declare.views.plan import render_human
from tests.unit.planning_fixtures import applied, desired, plan_of


class Clock:
    def __init__(self, now: float = 1_000_040.0) -> None:  # 20 s into a minute (60 * 16,667 + 20)
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_window_admits_calls_then_refuses_until_it_resets() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = (RateLimit(calls=3),)
    assert [limiter.admit("ep", limit, "anonymous") for _ in range(3)] == [None] * 3
    assert limiter.admit("ep", limit, "anonymous") == pytest.approx(40.0)
    clock.now += 39.5
    assert limiter.admit("ep", limit, "anonymous") == pytest.approx(0.5)
    clock.now += 0.5  # the next minute: counters start again
    assert [limiter.admit("ep", limit, "anonymous") for _ in range(3)] == [None] * 3
    assert limiter.admit("ep", limit, "anonymous") is not None


def test_an_hourly_limit_resets_on_the_hour() -> None:
    clock = Clock(3600 * 100 + 600)  # 10 minutes past
    limiter = RateLimiter(clock)
    hourly = (RateLimit(calls=1, renewal_period="hour"),)
    assert limiter.admit("ep", hourly, "x") is None
    assert limiter.admit("ep", hourly, "x") == pytest.approx(3000.0)


def test_endpoints_and_users_are_counted_apart() -> None:
    limiter = RateLimiter(Clock())
    per_user = (RateLimit(calls=1, key="user"),)
    assert limiter.admit("a", per_user, "alice") is None
    assert limiter.admit("a", per_user, "bob") is None
    assert limiter.admit("a", per_user, "alice") is not None
    assert limiter.admit("b", per_user, "alice") is None
    per_endpoint = (RateLimit(calls=1),)
    assert limiter.admit("c", per_endpoint, "alice") is None
    assert limiter.admit("c", per_endpoint, "bob") is not None


def test_every_limit_must_have_room_and_a_refusal_counts_against_none() -> None:
    limiter = RateLimiter(Clock())
    both = (RateLimit(calls=5), RateLimit(calls=2, key="user"))
    assert limiter.admit("ep", both, "alice") is None
    assert limiter.admit("ep", both, "alice") is None
    assert limiter.admit("ep", both, "alice") is not None  # alice's 2 are used
    # Alice's refused request did not use the endpoint's room: bob still gets 3 of 5.
    assert [limiter.admit("ep", both, "bob") is None for _ in range(3)] == [True, True, False]


def test_zero_calls_refuses_everything_and_no_limit_admits_everything() -> None:
    limiter = RateLimiter(Clock())
    assert limiter.admit("ep", (RateLimit(calls=0),), "x") is not None
    assert all(limiter.admit("ep", (), "x") is None for _ in range(1000))


def test_counters_of_removed_endpoints_are_forgotten() -> None:
    limiter = RateLimiter(Clock())
    limit = (RateLimit(calls=1),)
    assert limiter.admit("gone", limit, "x") is None
    assert limiter.admit("kept", limit, "x") is None
    limiter.forget_except(["kept"])
    assert limiter.admit("gone", limit, "x") is None  # a new endpoint of that name starts at 0
    assert limiter.admit("kept", limit, "x") is not None


def test_enforced_limits_take_rate_limits_and_the_ai_gateway_calls_limits() -> None:
    extra: dict[str, Any] = {
        "rate_limits": [{"calls": 100, "renewal_period": "minute"}],
        "ai_gateway": {
            "rate_limits": [
                {"calls": 10, "key": "user", "renewal_period": "minute"},
                {"calls": 5, "key": "user_group", "principal": "ml", "renewal_period": "minute"},
                {"calls": 7, "key": "user", "principal": "a@b.c", "renewal_period": "minute"},
                {"tokens": 1000, "key": "endpoint", "renewal_period": "minute"},
            ]
        },
    }
    limits = manifest_limits(extra)
    assert (*limits.top, *limits.ai_gateway) == (
        RateLimit(calls=100, key="endpoint"),
        RateLimit(calls=10, key="user"),
    )
    assert limits.top == (RateLimit(calls=100, key="endpoint"),)
    assert manifest_limits({}) == manifest_limits({"rate_limits": []})


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"calls": -1}, "calls must be a whole number of at least 0, got -1"),
        ({"calls": True}, "calls must be a whole number"),
        ({"calls": 1, "key": "team"}, "key must be one of endpoint, user, got 'team'"),
        (
            {"calls": 1, "renewal_period": "second"},
            "renewal_period must be one of minute, hour, got 'second'",
        ),
        ("100/minute", "a rate limit must be an object"),
    ],
)
def test_a_malformed_limit_says_what_is_wrong(entry: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RateLimit.from_json(entry)


def _limited(limits: list[dict[str, Any]]) -> Any:
    d = desired(("1", 100))
    return replace(
        d, spec=replace(d.spec, rate_limits=manifest_limits({"rate_limits": limits}).top)
    )


def test_the_routing_table_and_description_carry_the_manifests_limits() -> None:
    state, _ = applied(_limited([{"calls": 50, "key": "user", "renewal_period": "minute"}]))
    table = routing_table(state, 1)
    assert table.endpoints["iris"].rate_limits == (RateLimit(calls=50, key="user"),)
    assert RoutingTable.from_json(table.to_json()) == table
    assert describe(state.endpoints["iris"])["rate_limits"] == [
        {"calls": 50, "key": "user", "renewal_period": "minute"}
    ]


def test_changing_rate_limits_is_a_live_route_push_without_restarts() -> None:
    state, actual = applied(_limited([{"calls": 20, "renewal_period": "minute"}]))
    changes = diff([_limited([{"calls": 50, "renewal_period": "minute"}])], state, actual, "gw")
    plan = plan_of(changes)
    assert [a.kind for a in plan.actions] == [ActionKind.SET_ROUTES]
    text = render_human(plan)
    assert '~ rate_limits: [{"calls": 20' in text and '-> [{"calls": 50' in text
    assert "# live, no restart" in text


def test_a_gateway_enforcing_other_limits_is_drift_that_the_plan_repairs() -> None:
    d = _limited([{"calls": 20, "renewal_period": "minute"}])
    state, actual = applied(d)
    assert not diff([d], state, actual, "gw")[0].route_push
    unlimited = routing_table(
        replace(
            state,
            endpoints={"iris": replace(state.endpoints["iris"], spec=desired(("1", 100)).spec)},
        ),
        1,
    )
    change = diff([d], state, replace(actual, gateway_table=unlimited), "gw")[0]
    assert change.route_push
    assert "the gateway does not route iris as recorded" in change.drift


def test_manifest_errors_locate_a_bad_enforced_limit(tmp_path: Path) -> None:
    (tmp_path / "ep.yaml").write_text(
        "name: ep\n"
        "config:\n"
        "  served_entities:\n"
        "    - entity_name: iris\n"
        "      entity_version: '1'\n"
        "rate_limits:\n"
        "  - calls: -5\n"
        "    renewal_period: minute\n"
        "ai_gateway:\n"
        "  rate_limits:\n"
        "    - calls: many\n"
        "      key: user\n"
        "      renewal_period: minute\n"
        "    - calls: 3\n"
        "      key: user_group\n"
        "      principal: ml\n"
        "      renewal_period: minute\n"
    )
    with pytest.raises(ManifestError) as caught:
        config = load_config(tmp_path, {})
        load_project_manifests(
            tmp_path,
            include=config.manifest_include,
            exclude=config.manifest_exclude,
            default_provider=config.default_provider,
        )
    text = str(caught.value)
    assert "ep.yaml:7: rate_limits[0].calls" in text
    assert "ep.yaml:11: ai_gateway.rate_limits[0].calls: calls must be a whole number" in text
    assert "ai_gateway.rate_limits[1]" not in text  # recorded, not enforced: not checked
    assert text.count("rate_limits[0].calls") == 2  # each problem once


def test_a_whole_float_is_a_valid_call_count() -> None:
    assert RateLimit.from_json({"calls": 10.0}) == RateLimit(calls=10)


def test_an_invalid_limit_recorded_by_an_older_declare_is_left_out() -> None:
    extra = {"ai_gateway": {"rate_limits": [{"calls": "many", "key": "user"}, {"calls": 4}]}}
    assert manifest_limits(extra).ai_gateway == (RateLimit(calls=4),)


def test_a_state_recorded_with_raw_rollout_and_limits_reads_them_typed() -> None:
    """States written before the spec carried typed values kept them raw in `extra`."""
    from declare.model import EndpointSpec, RolloutPolicy

    spec = desired(("1", 100)).spec
    legacy = {k: v for k, v in spec.to_json().items() if k not in ("rollout", "rate_limits")}
    legacy.pop("ai_gateway_rate_limits")
    legacy["extra"] = {
        "rollout": {"strategy": "canary", "steps": [20, 100], "bake_seconds": 5},
        "rate_limits": [{"calls": 7}],
        "ai_gateway": {"rate_limits": [{"calls": 3, "key": "user"}]},
    }
    read = EndpointSpec.from_json(legacy)
    assert read.rollout == RolloutPolicy.from_manifest(legacy["extra"]["rollout"])
    assert read.rate_limits == (RateLimit(calls=7),)
    assert read.ai_gateway_rate_limits == (RateLimit(calls=3, key="user"),)
    assert set(read.extra) == {"ai_gateway"}
    assert EndpointSpec.from_json(read.to_json()) == read
