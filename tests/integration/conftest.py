"""Shared fixtures of the integration tests: a real MLflow registry and local providers.

- `mlflow_project` (session): a folder with an MLflow sqlite registry (`mlflow.db`) and its
  artifacts (`mlartifacts/`), holding `iris` v1 (LogisticRegression), `iris` v2
  (GaussianNB: a tree model would need skops_trusted_types to load), both scikit-learn on
  the iris data with a 3-row input example, and `broken` v1 (a pyfunc whose `load_context`
  raises RuntimeError("model cannot load")).
  The models are logged by a child Python process, so no MLflow global (tracking URI, env
  vars, active run) leaks into the test process. `mlflow_project.resolve("models:/iris/1")`
  gives a `declare.model.ResolvedModel` of a registered version.
- `cli_project`: a `tests.support.CliProject` on a fresh tmp folder using that registry, with
  no manifest yet; destroyed at teardown, so nothing outlives a failed assertion.
- `provider_context`: a ProviderContext on a fresh tmp folder.
- `local_provider`: a LocalProvider on that context; at teardown every replica it still
  lists is stopped (by its recorded process identity, never by name).

Helpers (import from tests.integration.conftest): `replica_spec(model, model_env=...)`,
`serving_example(model)` (the bytes of its serving_input_example.json) and
`wait_for_prediction(handle, body)` (polls /invocations until 200; returns JSON, seconds).

Every test in this folder is marked `integration`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from declare.errors import ModelResolutionError
from declare.model import ReplicaHandle, ReplicaSpec, ResolvedModel
from declare.provider import ProviderContext
from providers.local import LocalProvider
from tests.support import CliProject

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "declare-integration"

# Written to <dir>/broken_model.py and logged as a model from code, so the replica loads the
# class from the model's own artifacts (a class pickled from a test module would need it).
BROKEN_MODEL_CODE = """\
import mlflow.pyfunc
from mlflow.models import set_model


class BrokenModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("model cannot load")

    def predict(self, context, model_input, params=None):
        return model_input


set_model(BrokenModel())
"""

# Run in a child interpreter with MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI set for it alone.
BUILD_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.filterwarnings("ignore")
    import mlflow, mlflow.pyfunc, mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB

    folder = sys.argv[1]
    client = mlflow.MlflowClient()
    experiment = client.create_experiment(
        "{experiment}", artifact_location=folder + "/mlartifacts"
    )
    import sklearn
    # Explicit requirements: MLflow's inference of them loads each model in a child process.
    requirements = [f"mlflow=={{mlflow.__version__}}", f"scikit-learn=={{sklearn.__version__}}"]
    X, y = load_iris(return_X_y=True, as_frame=True)
    example = X.head(3)
    for estimator in (LogisticRegression(max_iter=500), GaussianNB()):
        with mlflow.start_run(experiment_id=experiment):
            mlflow.sklearn.log_model(
                estimator.fit(X, y), name="model", input_example=example,
                registered_model_name="iris", pip_requirements=requirements,
            )
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="model", python_model=folder + "/broken_model.py",
            registered_model_name="broken", pip_requirements=requirements[:1],
        )
    print(json.dumps({{"ok": True}}))
    """
).format(experiment=EXPERIMENT)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class MlflowProject:
    """A folder holding an MLflow sqlite registry and the artifacts of its models."""

    dir: Path
    tracking_uri: str
    iris: str = "iris"
    broken: str = "broken"

    @property
    def model_env(self) -> dict[str, str]:
        """The MLflow settings a replica needs to load models from this registry."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_REGISTRY_URI": self.tracking_uri}

    def resolve(self, uri: str) -> ResolvedModel:
        """`models:/name/version` or `models:/name@alias` as a pinned ResolvedModel."""
        return resolve_registry_model(self.tracking_uri, uri)


def resolve_registry_model(tracking_uri: str, uri: str) -> ResolvedModel:
    """Resolve a registry model URI the way declare's resolver would, for tests."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not uri.startswith("models:/"):
        raise ModelResolutionError(f"{uri}: only models:/ URIs are resolved by this helper")
    ref = uri[len("models:/") :]
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = ref.split("/", 1)
            alias = None
            version = client.get_model_version(name, number)
        source = client.get_model_version_download_uri(name, version.version)
    except (MlflowException, ValueError) as exc:
        raise ModelResolutionError(f"{uri}: {exc}") from exc
    folder = Path(source.removeprefix("file://"))
    env_files = [folder / "python_env.yaml", folder / "requirements.txt"]
    env_hash = hashlib.sha256(
        b"".join(p.read_bytes() for p in env_files if p.exists())
    ).hexdigest()[:12]
    mlmodel: Mapping[str, Any] = yaml.safe_load((folder / "MLmodel").read_text()) or {}
    signature = mlmodel.get("signature")
    return ResolvedModel(
        uri=uri,
        pinned_uri=f"models:/{name}/{version.version}",
        name=name,
        version=str(version.version),
        alias=alias,
        run_id=version.run_id,
        source=str(folder),
        input_example=(
            "serving_input_example.json"
            if (folder / "serving_input_example.json").exists()
            else None
        ),
        env_hash=env_hash,
        signature={k: str(v) for k, v in signature.items()} if signature else None,
    )


@pytest.fixture(scope="session")
def mlflow_project(tmp_path_factory: pytest.TempPathFactory) -> MlflowProject:
    folder = tmp_path_factory.mktemp("mlflow-project")
    tracking_uri = f"sqlite:///{folder}/mlflow.db"
    (folder / "broken_model.py").write_text(BROKEN_MODEL_CODE)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_REGISTRY_URI": tracking_uri,
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", BUILD_SCRIPT, str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0 or '"ok": true' not in result.stdout:
        pytest.fail(f"building the MLflow test registry failed:\n{result.stderr[-4000:]}")
    print(f"\n[mlflow_project] registry built in {time.monotonic() - started:.1f}s at {folder}")
    return MlflowProject(dir=folder, tracking_uri=tracking_uri)


@pytest.fixture
def cli_project(tmp_path: Path, mlflow_project: MlflowProject) -> Iterator[CliProject]:
    p = CliProject(tmp_path, mlflow_project.tracking_uri)
    yield p
    p.declare("destroy", "--auto-approve")
    p.stop_leftovers()


@pytest.fixture
def provider_context(tmp_path: Path) -> ProviderContext:
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    return ProviderContext(
        project="itest", project_dir=project_dir, state_dir=project_dir / "state"
    )


@pytest.fixture
def local_provider(provider_context: ProviderContext) -> Iterator[LocalProvider]:
    provider = LocalProvider(provider_context)
    yield provider
    for handle in provider.list_owned():
        provider.stop_replica(handle, grace_seconds=2.0)


def replica_spec(
    model: ResolvedModel,
    *,
    model_env: Mapping[str, str],
    endpoint: str = "iris",
    entity: str = "iris-1",
    index: int = 0,
    project: str = "itest",
    workload_type: str = "CPU",
    environment_vars: Mapping[str, str] | None = None,
) -> ReplicaSpec:
    """A ReplicaSpec of `model` for tests (generation derived from the pinned URI)."""
    return ReplicaSpec(
        project=project,
        endpoint=endpoint,
        entity=entity,
        generation=hashlib.sha256(model.pinned_uri.encode()).hexdigest()[:8],
        index=index,
        model=model,
        workload_type=workload_type,
        environment_vars=dict(environment_vars or {}),
        model_env=dict(model_env),
    )


def wait_for_prediction(
    handle: ReplicaHandle, body: bytes, timeout: float = 90.0
) -> tuple[dict[str, Any], float]:
    """POST `body` to the replica's /invocations until it answers 200; (JSON, seconds)."""
    import httpx

    started = time.monotonic()
    deadline = started + timeout
    last = "no answer"
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                response = client.post(
                    f"{handle.url}/invocations",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    answer: dict[str, Any] = response.json()
                    return answer, time.monotonic() - started
                last = f"HTTP {response.status_code}: {response.text[:300]}"
            time.sleep(0.1)
    raise AssertionError(f"replica {handle.id} gave no prediction in {timeout}s: {last}")


def serving_example(model: ResolvedModel) -> bytes:
    assert model.input_example, f"{model.pinned_uri} has no serving input example"
    return (Path(model.source) / model.input_example).read_bytes()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
