"""The local provider's model environments, without building one: the setting, what goes
into an environment and its key, the plan's build, and a replica's environment in it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mlflow.version import VERSION as MLFLOW_VERSION

from declare.errors import ConfigError, ProviderError
from declare.model import ReplicaSpec, ResolvedModel
from declare.provider import ProviderContext
from providers.local import LocalProvider
from providers.local.envs import EnvPlan, env_plan
from providers.local.launch import Launch
from providers.local.settings import LocalSettings

MLMODEL = "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"


def _model(folder: Path, requirements: str, python: str | None = None) -> ResolvedModel:
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text(MLMODEL)
    (folder / "requirements.txt").write_text(requirements)
    if python is not None:
        (folder / "python_env.yaml").write_text(f"python: {python}\n")
    return ResolvedModel(uri=str(folder), pinned_uri=str(folder), source=str(folder))


def test_the_setting_is_shared_or_per_model() -> None:
    assert LocalSettings.parse({}).environments == "shared"
    assert LocalSettings.parse({"environments": "per_model"}).environments == "per_model"
    with pytest.raises(ConfigError, match=r"providers.local.environments: must be one of"):
        LocalSettings.parse({"environments": "conda"})


def test_models_with_the_same_requirements_share_one_environment(tmp_path: Path) -> None:
    a = _model(tmp_path / "a", "mlflow==2.20.0\npyjokes==0.8.3\n", "3.11.7")
    b = _model(tmp_path / "b", "# comment\nmlflow==2.20.0\npyjokes==0.8.3\n", "3.11.2")
    c = _model(tmp_path / "c", "mlflow==2.20.0\npyjokes==0.8.2\n", "3.11.7")
    d = _model(tmp_path / "d", "mlflow==2.20.0\npyjokes==0.8.3\n", "3.12.1")
    plans = [env_plan(m, tmp_path / "envs") for m in (a, b, c, d)]
    assert plans[0].key == plans[1].key
    assert len({p.key for p in plans}) == 3
    assert plans[0].folder == tmp_path / "envs" / plans[0].key
    assert plans[0].python == "3.11" and plans[3].python == "3.12"
    assert plans[0].requirements[:2] == ("mlflow-skinny==2.20.0", "pyjokes==0.8.3")
    assert {"httptools", "pandas", "numpy"} <= set(plans[0].requirements)


def test_an_unversioned_or_missing_mlflow_gets_declares_version(tmp_path: Path) -> None:
    bare = env_plan(_model(tmp_path / "bare", "mlflow\n"), tmp_path / "envs")
    none = env_plan(_model(tmp_path / "none", "pyjokes\n"), tmp_path / "envs")
    assert f"mlflow-skinny=={MLFLOW_VERSION}" in bare.requirements
    assert f"mlflow-skinny=={MLFLOW_VERSION}" in none.requirements
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert bare.python == host  # no python_env.yaml: the host's Python


def test_a_model_without_an_mlmodel_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    model = ResolvedModel(uri=str(folder), pinned_uri=str(folder), source=str(folder))
    with pytest.raises(ProviderError, match="no MLmodel"):
        env_plan(model, tmp_path / "envs")


def test_shared_needs_no_build_and_per_model_plans_one(tmp_path: Path) -> None:
    model = _model(tmp_path / "m", "mlflow\n")

    def provider(settings: dict[str, str]) -> LocalProvider:
        return LocalProvider(ProviderContext("p", tmp_path, tmp_path / "state", settings))

    assert not provider({}).build_info(model, "CPU").needed
    per_model = provider({"environments": "per_model"})
    assert per_model.environments is not None
    plan = per_model.environments.plan(model)
    # A built environment is cached: no uv is asked anything.
    plan.python_bin.parent.mkdir(parents=True)
    plan.python_bin.write_text("")
    (plan.folder / ".complete").write_text("{}")
    info = per_model.build_info(model, "CPU")
    assert (info.key, info.needed, info.cached) == (plan.key, True, True)
    assert (info.kind, info.ref) == ("environment", f"environment {plan.key}")


def test_a_replica_in_its_environment_gets_its_python_path_and_none_of_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere/declare")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    plan = EnvPlan("k", "3.11", (), tmp_path / "envs" / "k")
    model = ResolvedModel(uri="m", pinned_uri="m", source=str(tmp_path))
    spec = ReplicaSpec(project="p", endpoint="e", entity="m", generation="g", index=0, model=model)
    launch = Launch(spec, "r1", str(tmp_path), "127.0.0.1", 1, 1, tmp_path / "r1.log", (),
                    "declare", plan.python_bin)  # fmt: skip
    env = launch.env()
    assert launch.argv()[:3] == [str(plan.python_bin), "-m", "declare.serve"]
    assert "PYTHONPATH" not in env
    assert env["PATH"].split(":")[0] == str(plan.python_bin.parent)
    assert env["VIRTUAL_ENV"] == str(plan.folder)
    shared = Launch(spec, "r1", str(tmp_path), "127.0.0.1", 1, 1, tmp_path / "r1.log")
    assert shared.argv()[0] == sys.executable and shared.env()["PYTHONPATH"]
