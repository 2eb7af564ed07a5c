"""`batching` on a served entity, end to end through the CLI: plan, apply, the gateway.

A manifest with `batching` is planned (the plan names the setting), applied on the local
provider (declare's replica server by default), and served: 8 clients at once through the
gateway, each with rows of its own, each getting exactly the answers a lone request to the
model gets; the replica's command line carries the batching options. With
`providers.local.server: mlflow` the plan is refused at the entity's line, before anything
starts. Bounded: 8 x 25 requests; destroy and stop_leftovers clean up.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import MlflowProject
from tests.support import IRIS_ROW, CliProject

pytestmark = pytest.mark.integration

BATCHED = """\
name: iris
config:
  served_entities:
    - entity_name: iris
      entity_version: "1"
      workload_size: Small
      batching:
        max_batch_size: 16
        max_delay_ms: 3
  traffic_config:
    routes:
      - served_model_name: iris-1
        traffic_percentage: 100
"""


def _project(folder: Path, mlflow_project: MlflowProject, extra: str = "") -> CliProject:
    folder.mkdir()
    project = CliProject(
        folder, mlflow_project.tracking_uri, "runtime:\n  enabled: false\n" + extra
    )
    project.write(BATCHED)
    return project


@pytest.fixture
def batched(tmp_path: Path, mlflow_project: MlflowProject) -> Iterator[CliProject]:
    project = _project(tmp_path / "batched", mlflow_project)
    yield project
    project.declare("destroy", "--auto-approve")
    project.stop_leftovers()


def _rows(seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [
        [round(rng.uniform(4, 8), 1), round(rng.uniform(2, 4.5), 1),
         round(rng.uniform(1, 7), 1), round(rng.uniform(0.1, 2.5), 1)]
        for _ in range(rng.randint(1, 3))
    ]  # fmt: skip


def test_a_batched_entity_is_planned_applied_and_answers_each_caller_its_own_rows(
    batched: CliProject, mlflow_project: MlflowProject
) -> None:
    plan = batched.declare("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "batching" in plan.stdout and "16 rows" in plan.stdout, plan.stdout
    applied = batched.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    (record,) = batched.provider_records()
    cmdline = Path(f"/proc/{record['process']['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"--max-batch-size" in cmdline and b"16" in cmdline, cmdline

    lone = {}  # what one request at a time gets, the reference
    with httpx.Client(timeout=30) as client:
        for seed in range(8 * 25):
            rows = _rows(seed)
            body = {"dataframe_split": {"columns": IRIS_ROW["columns"], "data": rows}}
            lone[seed] = client.post(batched.url, json=body).json()

    def client_run(first: int) -> list[tuple[int, Any]]:
        seen = []
        with httpx.Client(timeout=30) as client:
            for seed in range(first, first + 25):
                body = {"dataframe_split": {"columns": IRIS_ROW["columns"], "data": _rows(seed)}}
                answer = client.post(batched.url, json=body)
                seen.append((seed, (answer.status_code, answer.json())))
        return seen

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(client_run, range(0, 8 * 25, 25)))
    answers = [answer for run in runs for answer in run]
    assert len(answers) == 200
    for seed, (status, body) in answers:
        assert status == 200 and body == lone[seed], (seed, body, lone[seed])
        assert len(body["predictions"]) == len(_rows(seed))


def test_the_plan_refuses_batching_at_the_entity_when_the_server_is_mlflows(
    tmp_path: Path, mlflow_project: MlflowProject
) -> None:
    project = _project(
        tmp_path / "mlflow-server", mlflow_project, "providers:\n  local: {server: mlflow}\n"
    )
    plan = project.declare("plan")
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert "iris.yaml:" in plan.stderr and "batching" in plan.stderr, plan.stderr
    assert "providers.local.server is mlflow" in plan.stderr, plan.stderr
    assert "Traceback" not in plan.stderr
    applied = project.declare("apply", "--auto-approve")
    assert applied.returncode == 1 and project.provider_records() == []
