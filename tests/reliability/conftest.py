"""Fixtures of the reliability suite, and the table it prints at the end.

The suite reuses the integration tests' real MLflow registry (`mlflow_project`) and adds a
`flaky` model that fails on half of its predictions (MLflow answers those with 400), for the
canary that must roll back. Each scenario records one row: scenario, requests sent, failed,
outcome; `pytest_terminal_summary` prints them as a table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import EXPERIMENT, MlflowProject, mlflow_project
from tests.support import CliProject, manifest

__all__ = ["mlflow_project"]

FLAKY_MODEL_CODE = """\
import random

import mlflow.pyfunc
from mlflow.models import set_model


class FlakyModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        if random.random() < 0.5:
            raise RuntimeError("flaky model fails on this input")
        return [0] * len(model_input)


set_model(FlakyModel())
"""

REGISTER = textwrap.dedent(
    """
    import sys, warnings
    warnings.filterwarnings("ignore")
    import mlflow, mlflow.pyfunc
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("{experiment}").experiment_id
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="model", python_model=sys.argv[1], registered_model_name="flaky",
            pip_requirements=[f"mlflow=={{mlflow.__version__}}"],
        )
    """
).format(experiment=EXPERIMENT)


@dataclass(frozen=True)
class Row:
    scenario: str
    sent: int
    failed: int
    outcome: str


ROWS: list[Row] = []


@pytest.fixture(scope="session")
def flaky_registry(mlflow_project: MlflowProject) -> MlflowProject:
    """The shared registry, with `flaky` v1 registered too."""
    code = mlflow_project.dir / "flaky_model.py"
    code.write_text(FLAKY_MODEL_CODE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(mlflow_project.model_env)
    subprocess.run(
        [sys.executable, "-c", REGISTER, str(code)], check=True, env=env, capture_output=True
    )
    return mlflow_project


@pytest.fixture
def project(tmp_path: Path, flaky_registry: MlflowProject) -> Iterator[CliProject]:
    p = CliProject(tmp_path, flaky_registry.tracking_uri)
    p.write(manifest("iris", "1"))
    yield p
    p.declare("destroy", "--auto-approve")
    p.stop_leftovers()


def record(scenario: str, sent: int, failed: int, outcome: str) -> None:
    ROWS.append(Row(scenario, sent, failed, outcome))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    width = max(len(r.scenario) for r in ROWS)
    tr = terminalreporter
    tr.write_sep("=", "reliability: requests during each scenario (127.0.0.1)")
    tr.write_line(f"{'scenario':<{width}}  {'sent':>6}  {'failed':>6}  outcome")
    for r in ROWS:
        tr.write_line(f"{r.scenario:<{width}}  {r.sent:>6}  {r.failed:>6}  {r.outcome}")
