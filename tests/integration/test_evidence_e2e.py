"""Evidence before users see a version, end to end: a real project on the local provider,
real replicas, the real gateway capturing into a real Delta table, the real CLI.

Replay: requests captured while iris v1 serves are replayed by `apply` against the new
served entity before any traffic moves. The same model (a new generation: one environment
variable changed) agrees on every row and the switch goes on; iris v2 (GaussianNB, where v1
is a LogisticRegression) answers some rows otherwise and the change rolls back. Users send
requests all along (bounded in count and time) and none of them fails.

Every request carries all 150 rows of the iris data, so any captured request holds the rows
on which the two models disagree.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_iris

from declare.evidence.captured import replayable_count
from tests.support import CliProject

pytestmark = pytest.mark.integration


def _iris_body() -> dict[str, Any]:
    x, _ = load_iris(return_X_y=True, as_frame=True)
    return {"dataframe_split": {"columns": list(x.columns), "data": x.values.tolist()}}


BODY = _iris_body()


def manifest(version: str, rollout: str = "", env: str = "1") -> str:
    return f"""\
name: iris
config:
  served_entities:
    - name: iris
      entity_name: iris
      entity_version: "{version}"
      workload_size: Small
      environment_vars:
        GENERATION_MARK: "{env}"
  traffic_config:
    routes:
      - served_model_name: iris
        traffic_percentage: 100
  auto_capture_config:
    enabled: true
{rollout}"""


REPLAY = """\
rollout:
  replay:
    requests: 20
    min_requests: 20
    max_disagreement: 0
    max_error_rate: 0
"""


class Users:
    """Two threads posting the whole iris data until stopped (at most 3,000 requests, 180 s);
    every answer's status and served entity counted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self._stop = threading.Event()
        self._budget = 3_000
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        deadline = time.monotonic() + 180
        with httpx.Client(timeout=30, trust_env=False) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if self._budget <= 0:
                        return
                    self._budget -= 1
                try:
                    r = client.post(self.url, json=BODY)
                    key, answer = str(r.status_code), r.text
                except httpx.HTTPError as exc:
                    key, answer = type(exc).__name__, ""
                with self._lock:
                    self.statuses[key] += 1
                    self.answers[answer] += 1

    def __enter__(self) -> Users:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    @property
    def failed(self) -> int:
        return sum(n for k, n in self.statuses.items() if k != "200")


@pytest.fixture
def project(cli_project: CliProject) -> Iterator[CliProject]:
    yield cli_project


def _table(project: CliProject) -> Path:
    return project.folder / "state" / "capture" / "main" / "default" / "iris_payload"


def _serving_generation(project: CliProject) -> str:
    record = project.state()["endpoints"]["iris"]
    return str(record["serving"]["iris"])


def test_replay_passes_for_the_same_model_and_rolls_back_a_different_one(
    project: CliProject,
) -> None:
    project.write(manifest("1"))
    up = project.declare("apply", "--auto-approve")
    assert up.returncode == 0, up.stdout + up.stderr

    # Without enough captured requests the plan is refused at the manifest's field.
    project.write(manifest("1", REPLAY, env="2"))
    refused = project.declare("plan")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "iris.yaml" in refused.stderr and "rollout.replay" in refused.stderr
    assert "holds 0 replayable requests, fewer than min_requests 20" in refused.stderr

    with httpx.Client(timeout=30, trust_env=False) as client:
        for _ in range(25):
            assert client.post(project.url, json=BODY).status_code == 200
    deadline = time.monotonic() + 60
    while replayable_count(_table(project), "iris") < 25:
        assert time.monotonic() < deadline, "the gateway did not capture the requests"
        time.sleep(0.2)
    v1_generation = _serving_generation(project)

    plan = project.declare("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "replay the newest 20 captured requests (of 25): iris against iris" in plan.stdout

    with Users(project.url) as same_users:
        same = project.declare("apply", "--auto-approve")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "endpoint.iris.replay: replay passes (iris: 20 requests, 0 errors, 0 of " in (
        same.stdout
    )
    assert _serving_generation(project) != v1_generation
    assert same_users.failed == 0, same_users.statuses

    # iris v2 answers some rows otherwise: the replay rolls it back before users see it.
    served_before = _serving_generation(project)
    project.write(manifest("2", REPLAY, env="2"))
    with Users(project.url) as users:
        other = project.declare("apply", "--auto-approve")
    assert other.returncode == 1, other.stdout + other.stderr
    text = other.stdout + other.stderr
    assert "replay of 20 captured requests against iris: iris answered" in text
    assert "rows differently from the serving entity" in text
    assert _serving_generation(project) == served_before
    assert users.failed == 0, users.statuses
    assert len(users.answers) == 1, "users saw answers of two models"
    record = project.state()["endpoints"]["iris"]
    assert record["status"]["config_update"] == "UPDATE_FAILED"
    assert {r["handle"]["generation"] for r in record["replicas"]} == {served_before}
    # the table holds the users' requests only: replays went straight to the replicas
    users_sent = 25 + same_users.statuses["200"] + users.statuses["200"]
    deadline = time.monotonic() + 30
    while replayable_count(_table(project), "iris") < users_sent:
        assert time.monotonic() < deadline, "the gateway did not capture the users' requests"
        time.sleep(0.2)
    assert replayable_count(_table(project), "iris") == users_sent


SHADOW = """\
rollout:
  shadow:
    percent: 50
    seconds: 6
    min_requests: 10
    max_disagreement: 0
    max_error_rate: 0
"""


def _shadow_rows(project: CliProject) -> list[dict[str, str]]:
    from deltalake import DeltaTable

    table = DeltaTable(str(_table(project))).to_pyarrow_table(columns=["request_metadata"])
    metas = [dict(r["request_metadata"] or []) for r in table.to_pylist()]
    return [m for m in metas if m.get("shadow") == "true"]


def test_shadow_passes_for_the_same_model_and_trips_on_another_while_users_see_one(
    project: CliProject,
) -> None:
    project.write(manifest("1"))
    up = project.declare("apply", "--auto-approve")
    assert up.returncode == 0, up.stdout + up.stderr

    project.write(manifest("1", SHADOW, env="2"))
    with Users(project.url) as same_users:
        same = project.declare("apply", "--auto-approve")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "endpoint.iris.shadow: shadow passes (iris: " in same.stdout
    assert " 0 errors, 0 of " in same.stdout
    assert same_users.failed == 0, same_users.statuses
    assert project.state()["endpoints"]["iris"].get("shadow") is None  # taken away again

    served_before = _serving_generation(project)
    project.write(manifest("2", SHADOW, env="2"))
    with Users(project.url) as users:
        other = project.declare("apply", "--auto-approve")
    assert other.returncode == 1, other.stdout + other.stderr
    text = other.stdout + other.stderr
    assert "shadow: iris answered " in text and "rows differently from the serving" in text
    assert users.failed == 0, users.statuses
    assert len(users.answers) == 1, "users saw the shadowed model's answers"
    record = project.state()["endpoints"]["iris"]
    assert _serving_generation(project) == served_before
    assert record.get("shadow") is None
    assert {r["handle"]["generation"] for r in record["replicas"]} == {served_before}
    # the mirrored answers are in the inference table, flagged, with the candidate's version
    deadline = time.monotonic() + 30
    while not any(m.get("model_version") == "2" for m in _shadow_rows(project)):
        assert time.monotonic() < deadline, "no shadow row of iris v2 was captured"
        time.sleep(0.2)
    assert {m["served_entity_name"] for m in _shadow_rows(project)} == {"iris"}
