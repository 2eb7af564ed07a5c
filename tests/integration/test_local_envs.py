"""Model environments on the local provider (`providers.local.environments`), for real.

A pyfunc model needing `pyjokes` (a small pure-Python package declare's own virtualenv
lacks) is logged by a child process into a registry of this module's own. With
`per_model` the plan builds its environment (`(not cached)`), the replica answers from it
(with pyjokes' version), and a second endpoint of the same model plans it `(cached)` and
shares it; with `shared` the same model fails readiness with the cause named. A model asking
for a Python or a package this host cannot give is refused at plan time, naming both.

One environment is built per run of this module (with uv, from the index or uv's cache).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from providers.local.envs import find_uv
from tests.support import CliProject

PYJOKES = "pyjokes==0.8.3"
JOKES_MODEL_CODE = """\
import mlflow.pyfunc
from mlflow.models import set_model


class JokesModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from importlib.metadata import version

        import pyjokes  # only in the model's own environment

        self.version = version("pyjokes")
        self.joke = pyjokes.get_joke()

    def predict(self, context, model_input, params=None):
        return [f"pyjokes {self.version}: {len(self.joke) > 0}"] * len(model_input)


set_model(JokesModel())
"""
LOG_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.filterwarnings("ignore")
    import mlflow, mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    folder, requirement = sys.argv[1], sys.argv[2]
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("envs", artifact_location=folder + "/mlartifacts")
    example = pd.DataFrame({"x": [1.0, 2.0]})
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="model", python_model=folder + "/jokes_model.py",
            registered_model_name="jokes",
            pip_requirements=[f"mlflow=={mlflow.__version__}", requirement],
            signature=infer_signature(example, ["x"]),
        )
    print(json.dumps({"ok": True}))
    """
)
PER_MODEL = "providers:\n  local:\n    environments: per_model\n"


def endpoint(name: str, model_uri: str = "models:/jokes/1") -> str:
    return (
        f"name: {name}\nconfig:\n  served_entities:\n    - name: jokes\n"
        f"      model_uri: {model_uri}\n"
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    if importlib.util.find_spec("pyjokes") is not None:
        pytest.skip("pyjokes is in declare's own environment: the test needs a package it lacks")
    if find_uv() is None:
        pytest.skip("uv is not installed (scripts/setup installs it with declare)")
    folder = tmp_path_factory.mktemp("envs-registry")
    tracking_uri = f"sqlite:///{folder}/mlflow.db"
    (folder / "jokes_model.py").write_text(JOKES_MODEL_CODE)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri}
    result = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT, str(folder), PYJOKES],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0 or '"ok": true' not in result.stdout:
        pytest.fail(f"logging the jokes model failed:\n{result.stderr[-4000:]}")
    return tracking_uri


def _project(folder: Path, tracking_uri: str, extra: str = "") -> Iterator[CliProject]:
    folder.mkdir()
    project = CliProject(folder, tracking_uri, extra)
    yield project
    project.declare("destroy", "--auto-approve")
    project.stop_leftovers()


@pytest.fixture
def per_model(tmp_path: Path, registry: str) -> Iterator[CliProject]:
    yield from _project(tmp_path / "per-model", registry, PER_MODEL)


@pytest.fixture
def shared(tmp_path: Path, registry: str) -> Iterator[CliProject]:
    yield from _project(tmp_path / "shared", registry)


def _predict(project: CliProject, name: str) -> list[str]:
    url = f"http://127.0.0.1:{project.port}/serving-endpoints/{name}/invocations"
    response = httpx.post(url, json={"dataframe_split": {"columns": ["x"], "data": [[1.0]]}})
    assert response.status_code == 200, response.text
    predictions: list[str] = response.json()["predictions"]
    return predictions


def test_per_model_builds_one_environment_that_serves_and_is_shared(per_model: CliProject) -> None:
    per_model.write(endpoint("jokes"), "jokes.yaml")
    plan = per_model.declare("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "build environment " in plan.stdout and "(not cached)" in plan.stdout, plan.stdout
    applied = per_model.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _predict(per_model, "jokes") == ["pyjokes 0.8.3: True"]

    per_model.write(endpoint("jokes-too"), "jokes-too.yaml")
    plan = per_model.declare("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "(not cached)" not in plan.stdout and "(cached)" in plan.stdout, plan.stdout
    applied = per_model.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _predict(per_model, "jokes-too") == ["pyjokes 0.8.3: True"]

    envs = per_model.folder / "state" / "local" / "envs"
    built = [p for p in envs.iterdir() if (p / ".complete").is_file()]
    assert len(built) == 1, sorted(p.name for p in envs.iterdir())
    record = json.loads((built[0] / ".complete").read_text())
    print(f"\n[envs] environment built in {record['seconds']} s")


def test_shared_environment_fails_readiness_naming_the_missing_module(shared: CliProject) -> None:
    shared.write(endpoint("jokes"), "jokes.yaml")
    plan = shared.declare("plan")
    assert plan.returncode == 0 and "build environment" not in plan.stdout, plan.stdout
    applied = shared.declare("apply", "--auto-approve")
    assert applied.returncode != 0
    assert "No module named 'pyjokes'" in applied.stdout + applied.stderr, applied.stdout


def _copy_model(tmp_path: Path, registry: str, edit: str, text: str) -> Path:
    """A copy of the jokes model's artifacts with one metadata file rewritten."""
    db = Path(registry.removeprefix("sqlite:///"))
    (source,) = [p.parent for p in (db.parent / "mlartifacts").rglob("MLmodel")]
    copy = tmp_path / "model-copy"
    shutil.copytree(source, copy)
    (copy / edit).write_text(text)
    return copy


def test_a_requirement_without_a_wheel_is_refused_at_plan_time(
    per_model: CliProject, tmp_path: Path, registry: str
) -> None:
    model = _copy_model(
        tmp_path, registry, "requirements.txt", "mlflow\nno-such-package-declare-test==1.0\n"
    )
    per_model.write(endpoint("nowheel", str(model)), "nowheel.yaml")
    plan = per_model.declare("plan")
    out = plan.stdout + plan.stderr
    assert plan.returncode == 1, out
    assert "no-such-package-declare-test==1.0" in out and str(model) in out, out


def test_a_python_not_on_the_host_is_refused_at_plan_time(
    per_model: CliProject, tmp_path: Path, registry: str
) -> None:
    model = _copy_model(
        tmp_path, registry, "python_env.yaml", "python: 3.4.10\nbuild_dependencies: []\n"
    )
    per_model.write(endpoint("oldpython", str(model)), "oldpython.yaml")
    plan = per_model.declare("plan")
    out = plan.stdout + plan.stderr
    assert plan.returncode == 1, out
    assert "needs Python 3.4" in out and str(model) in out, out
