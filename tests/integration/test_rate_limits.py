"""A manifest's `rate_limits`, applied for real: the gateway answers 429 beyond the limit,
and editing the limit is a live change (plan says so, no replica restarts)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support import CliProject, manifest

pytestmark = pytest.mark.integration


def limited(calls: int) -> str:
    return manifest("iris", "1") + (
        f"rate_limits:\n  - calls: {calls}\n    key: endpoint\n    renewal_period: minute\n"
    )


def _burst(cli_project: CliProject, n: int) -> list[httpx.Response]:
    return [cli_project.predict() for _ in range(n)]


def test_rate_limit_is_enforced_and_changes_live(cli_project: CliProject) -> None:
    cli_project.write(limited(5))
    applied = cli_project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    responses = _burst(cli_project, 6)
    if [r.status_code for r in responses] != [200] * 5 + [429]:
        # The minute turned over mid-burst: use up this window, wait for the next, again.
        last = responses[-1]
        for _ in range(6):
            if last.status_code == 429:
                break
            last = cli_project.predict()
        time.sleep(int(last.headers["Retry-After"]) + 0.2)
        responses = _burst(cli_project, 6)
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    refused = responses[5]
    assert refused.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert "5 calls per minute (endpoint)" in refused.json()["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    mgmt = httpx.get(
        cli_project.url.split("/serving-endpoints")[0] + "/api/2.0/serving-endpoints/iris"
    )
    assert mgmt.json()["rate_limits"] == [
        {"calls": 5, "key": "endpoint", "renewal_period": "minute"}
    ]

    pids = cli_project.recorded_pids()
    cli_project.write(limited(1000))
    plan = cli_project.declare("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "~ rate_limits" in plan.stdout and "# live, no restart" in plan.stdout
    assert "start replica" not in plan.stdout and "stop replica" not in plan.stdout
    applied = cli_project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert cli_project.predict().status_code == 200
    assert cli_project.recorded_pids() == pids
    assert cli_project.declare("plan", "--detailed-exitcode").returncode == 0
