"""Models as Databricks and MLflow users name them: a Databricks create-endpoint body as it
is, and a registry alias that moves (the same served entity gets a new model, rolled out as a
canary with both generations behind one name)."""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
from mlflow import MlflowClient

from tests.integration.conftest import MlflowProject
from tests.support import CliProject, Load

DATABRICKS_BODY = {
    "name": "iris-split",
    "config": {
        "served_entities": [
            {
                "entity_name": "iris",
                "entity_version": "1",
                "workload_size": "Small",
                "scale_to_zero_enabled": True,
            },
            {
                "entity_name": "iris",
                "entity_version": "2",
                "workload_size": "Small",
                "scale_to_zero_enabled": True,
            },
        ],
        "traffic_config": {
            "routes": [
                {"served_model_name": "iris-1", "traffic_percentage": 80},
                {"served_model_name": "iris-2", "traffic_percentage": 20},
            ]
        },
    },
    "tags": [{"key": "team", "value": "ml"}],
}

ALIAS = "e2e-champion"
ALIAS_MANIFEST = f"""\
name: iris
config:
  served_entities:
    - model_uri: models:/iris@{ALIAS}
rollout:
  strategy: canary
  steps: [50, 100]
  bake_seconds: 2
  guards:
    max_error_rate: 0.05
    min_requests: 10
"""


def test_databricks_create_body_validates_plans_and_splits_traffic(cli_project: CliProject) -> None:
    (cli_project.folder / "endpoint.json").write_text(json.dumps(DATABRICKS_BODY, indent=2))
    assert cli_project.declare("validate").returncode == 0
    plan = cli_project.declare("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    assert "iris v1" in plan.stdout and "iris v2" in plan.stdout
    assert "iris-1 80%, iris-2 20%" in plan.stdout
    applied = cli_project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    url = cli_project.url.replace("/iris/", "/iris-split/")
    served: Counter[str] = Counter()
    body = {
        "dataframe_records": [
            {
                "sepal length (cm)": 5.1,
                "sepal width (cm)": 3.5,
                "petal length (cm)": 1.4,
                "petal width (cm)": 0.2,
            }
        ]
    }
    with httpx.Client(timeout=30) as client:
        for _ in range(300):
            r = client.post(url, json=body)
            assert r.status_code == 200
            served[r.headers["served-model-name"]] += 1
    # 80/20 by weighted random: bounds far outside chance (p < 1e-6).
    assert 195 <= served["iris-1"] <= 285, served
    mgmt = httpx.get(url.split("/serving-endpoints")[0] + "/api/2.0/serving-endpoints/iris-split")
    routes = mgmt.json()["config"]["traffic_config"]["routes"]
    assert [(r["served_model_name"], r["traffic_percentage"]) for r in routes] == [
        ("iris-1", 80),
        ("iris-2", 20),
    ]


def test_alias_is_pinned_at_plan_time_and_a_move_rolls_out(
    cli_project: CliProject, mlflow_project: MlflowProject
) -> None:
    client = MlflowClient(mlflow_project.tracking_uri, mlflow_project.tracking_uri)
    client.set_registered_model_alias("iris", ALIAS, "1")
    cli_project.write(ALIAS_MANIFEST)
    plan = cli_project.declare("plan")
    assert f"iris v1 (@{ALIAS})" in plan.stdout, plan.stdout + plan.stderr
    assert cli_project.declare("apply", "--auto-approve").returncode == 0
    assert cli_project.declare("plan", "--detailed-exitcode").returncode == 0
    entity = f"iris-{ALIAS}"
    assert cli_project.predict().headers["served-model-name"] == entity

    client.set_registered_model_alias("iris", ALIAS, "2")
    moved = cli_project.declare("plan", "--detailed-exitcode")
    assert moved.returncode == 2
    assert f"iris v1 (@{ALIAS})" in moved.stdout and f"iris v2 (@{ALIAS})" in moved.stdout
    assert "shift traffic, step 1/2 (50% to the new config)" in moved.stdout
    with Load(cli_project.url) as load:
        time.sleep(1)
        applied = cli_project.declare("apply", "--auto-approve")
        time.sleep(1)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert load.failed == 0, load.results
    # Both generations answered under the entity's own name.
    assert set(load.served) == {entity}
    ep = cli_project.state()["endpoints"]["iris"]
    assert ep["models"][entity]["version"] == "2"
    assert ep["split"] == []
    assert cli_project.declare("plan", "--detailed-exitcode").returncode == 0
