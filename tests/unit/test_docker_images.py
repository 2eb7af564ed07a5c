"""The docker provider's pure parts: settings, image contents and tags, workload resources,
how the plan names builds (cached or not), and what it refuses to start (batching). No
engine is needed here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from declare.diff import diff
from declare.errors import ConfigError, ProviderError
from declare.model import Batching, ReplicaSpec, ResolvedModel
from declare.plan.actions import ActionKind
from declare.provider import BuildInfo, ProviderContext
from declare.views.plan import render_human
from providers.docker import DockerProvider
from providers.docker.image import (
    RUNTIME_REQUIREMENTS,
    flavor_requirements,
    image_plan,
    requirements_for,
)
from providers.docker.provider import BATCHING_REFUSED, refuse_batching
from providers.docker.settings import DockerSettings
from providers.docker.workloads import gpu_runtime_problem, resources
from providers.local import LocalProvider
from tests.unit.planning_fixtures import applied, desired, entity, plan_of
from tests.unit.planning_fixtures import model as pf_model

MLMODEL = "flavors:\n  python_function:\n    python_version: 3.11.7\n"


def _model(folder: Path, requirements: str, python: str = "3.11.7") -> ResolvedModel:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text(MLMODEL.replace("3.11.7", python))
    (folder / "requirements.txt").write_text(requirements)
    (folder / "python_env.yaml").write_text(f"python: {python}\n")
    return ResolvedModel(uri=str(folder), pinned_uri=str(folder), source=str(folder))


def _plan(model: ResolvedModel, base: str = "base:1", arch: str = "x86_64") -> str:
    return image_plan(
        model,
        base_image=base,
        python_version="3.11",
        image_repo="declare-env",
        mlflow_package="mlflow-skinny",
        extra=(),
        engine_arch=arch,
    ).tag


# -- requirements --------------------------------------------------------------------------


def test_mlflow_is_installed_as_skinny_and_the_server_needs_are_added() -> None:
    lines = requirements_for(
        "# comment\nmlflow==3.17.2\nscikit-learn==1.9.1\n--index-url http://x\npandas<3\n",
        "mlflow-skinny",
        ["xgboost==2.0"],
        "9.9.9",
    )
    assert lines[:3] == ("mlflow-skinny==3.17.2", "scikit-learn==1.9.1", "pandas<3")
    assert "xgboost==2.0" in lines
    assert "pandas" not in lines  # the model's own pin wins
    assert {"numpy", "uvicorn", "fastapi", "uvloop"} <= set(lines)
    assert not any(line.startswith("--") for line in lines)


def test_a_model_without_mlflow_gets_declares_version() -> None:
    lines = requirements_for("scikit-learn\n", "mlflow-skinny", [], "3.17.2")
    assert "mlflow-skinny==3.17.2" in lines
    assert set(RUNTIME_REQUIREMENTS) <= set(lines)


def test_a_skops_model_gets_skops_once() -> None:
    mlmodel = "flavors:\n  sklearn:\n    serialization_format: skops\n"
    needs = flavor_requirements(mlmodel)
    assert needs == ("skops",)
    assert requirements_for("mlflow\n", "mlflow-skinny", [], "x", needs).count("skops") == 1
    pinned = requirements_for("mlflow\nskops==0.16.0\n", "mlflow-skinny", [], "x", needs)
    assert "skops" not in pinned and "skops==0.16.0" in pinned
    assert flavor_requirements("flavors:\n  sklearn:\n    serialization_format: pickle\n") == ()


def test_full_mlflow_can_be_kept() -> None:
    assert requirements_for("mlflow[extras]==3.1\n", "mlflow", [], "x")[0] == "mlflow[extras]==3.1"


# -- image tags ----------------------------------------------------------------------------


def test_same_environment_same_tag_other_environment_other_tag(tmp_path: Path) -> None:
    a = _model(tmp_path / "a", "mlflow==3.17.2\nscikit-learn==1.9.1\n")
    b = _model(tmp_path / "b", "mlflow==3.17.2\nscikit-learn==1.9.1\n")
    c = _model(tmp_path / "c", "mlflow==3.17.2\nscikit-learn==1.8.0\n")
    assert _plan(a) == _plan(b)
    assert _plan(a) != _plan(c)
    assert _plan(a) != _plan(a, base="base:2")  # another base image is another image
    assert _plan(a) != _plan(a, arch="aarch64")
    assert _plan(a).startswith("declare-env:")


def test_a_model_of_another_python_is_refused_with_the_fix(tmp_path: Path) -> None:
    model = _model(tmp_path / "m", "mlflow\n", python="3.12.1")
    with pytest.raises(ProviderError, match=r"logged with Python 3\.12.*base_image"):
        _plan(model)


def test_an_engine_of_an_unknown_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="s390x"):
        _plan(_model(tmp_path / "m", "mlflow\n"), arch="s390x")


# -- settings ------------------------------------------------------------------------------


def test_settings_defaults_are_for_users_on_the_internet(tmp_path: Path) -> None:
    s = DockerSettings.parse({}, tmp_path)
    assert s.base_image == "python:3.11-slim"
    assert s.host == "127.0.0.1" and s.restart_policy == "no" and s.replica_concurrency == 4
    assert s.cpus == 1.0 and s.memory_bytes == 2 * 2**30
    assert s.wheel_cache.parts[-2:] == ("declare", "wheels")


def test_settings_relative_cache_is_relative_to_the_project(tmp_path: Path) -> None:
    s = DockerSettings.parse({"wheel_cache": "cache", "memory": "512m"}, tmp_path)
    assert s.wheel_cache == tmp_path / "cache"
    assert s.memory_bytes == 512 * 2**20


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"engine": "docker.sock"}, "providers.docker.engine: 'docker.sock' is not"),
        ({"host": "0.0.0.0"}, "providers.docker.host: '0.0.0.0' is not an IPv4 loopback"),
        ({"memory": "lots"}, "providers.docker.memory: 'lots' is not an amount"),
        ({"restart_policy": "sometimes"}, "providers.docker.restart_policy: 'sometimes'"),
        ({"python_version": "3"}, "providers.docker.python_version: '3' is not"),
        ({"image_repo": "Bad Repo"}, "providers.docker.image_repo: 'Bad Repo'"),
        ({"cpus": 0}, "providers.docker.cpus: must be a number"),
        ({"gpus": 1}, "unknown setting 'gpus'"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DockerSettings.parse(raw, tmp_path)
    assert message in str(caught.value)


# -- workloads -----------------------------------------------------------------------------


def test_workload_types_map_to_gpus_and_limits_within_the_machine() -> None:
    cpu = resources("CPU", 1.0, 2 * 2**30, engine_cpus=2, engine_memory=8 * 2**30)
    assert (cpu.cpus, cpu.memory_bytes, cpu.gpus) == (1.0, 2 * 2**30, 0)
    assert cpu.device_requests() == []
    multi = resources("MULTIGPU_MEDIUM", 1.0, 2**30, engine_cpus=2, engine_memory=8 * 2**30)
    assert (multi.cpus, multi.memory_bytes, multi.gpus) == (2.0, 8 * 2**30, 4)
    (request,) = multi.device_requests()
    assert request["Driver"] == "nvidia" and request["Count"] == 4
    assert request["Capabilities"] == [["gpu"]]
    assert [resources(t, 1, 1).gpus for t in ("GPU_SMALL", "GPU_MEDIUM", "GPU_LARGE")] == [1] * 3


def test_gpu_runtime_problem_names_what_is_missing() -> None:
    info = {"Runtimes": {"runc": {}, "io.containerd.runc.v2": {}}}
    problem = gpu_runtime_problem("GPU_SMALL", info)
    assert problem is not None
    assert "GPU_SMALL needs 1 GPU" in problem and "'nvidia' is not among its runtimes" in problem
    assert "io.containerd.runc.v2, runc" in problem and "NVIDIA Container Toolkit" in problem
    assert gpu_runtime_problem("CPU", info) is None
    assert gpu_runtime_problem("GPU_SMALL", {"Runtimes": {"nvidia": {}, "runc": {}}}) is None


# -- the plan names builds -----------------------------------------------------------------


def _plan_with(builds: dict[str, BuildInfo]) -> str:
    state, actual = applied(desired(("1", 100)))
    changes = diff([desired(("2", 100))], state, actual, "gw")
    generation = changes[0].starts[0].generation
    plan = plan_of(changes, builds={generation: builds["x"]})
    kinds = [a.kind for a in plan.actions]
    return render_human(plan) + ("\nBUILD ACTION" if ActionKind.BUILD in kinds else "")


def test_plan_says_whether_each_build_is_cached() -> None:
    cached = _plan_with({"x": BuildInfo("k1", needed=True, cached=True, ref="declare-env:k1")})
    assert "image declare-env:k1 (cached)" in cached
    assert "BUILD ACTION" not in cached
    fresh = _plan_with({"x": BuildInfo("k1", needed=True, cached=False, ref="declare-env:k1")})
    assert "build declare-env:k1 for iris v2 (not cached)" in fresh
    assert "BUILD ACTION" in fresh
    local = _plan_with({"x": BuildInfo("k1", needed=False, cached=True)})
    assert "image" not in local and "BUILD ACTION" not in local


# -- what it cannot serve ------------------------------------------------------------------


def test_a_replica_with_batching_is_refused_before_the_engine_is_asked(tmp_path: Path) -> None:
    """MLflow's scoring server cannot batch: the plan refuses the entity (`entity_problems`,
    at the `batching` field) and, should a saved plan still ask, so does the start, before
    the engine is asked (nothing is made)."""
    provider = DockerProvider(ProviderContext("p", tmp_path, tmp_path / "state"))
    spec = ReplicaSpec("p", "iris", "iris-1", "gen", 0, pf_model(), batching=Batching(32, 2.0))
    with pytest.raises(ProviderError) as caught:
        provider.start_replica(spec)
    assert str(caught.value) == (
        "served entity iris-1 of endpoint iris: batching needs declare's replica server, which "
        "the docker provider does not run; remove `batching` or use the local provider (its "
        "server is declare's by default)"
    )
    assert not (tmp_path / "state").exists()
    refuse_batching(replace(spec, batching=None))  # without batching: nothing to refuse


def test_the_plan_refuses_batching_at_the_entity_for_docker_and_for_local_with_mlflow(
    tmp_path: Path,
) -> None:
    """`entity_problems` (declare.provider.EntityChecks) is what `plan` asks before anything
    starts: docker never batches; local batches only with its default server, declare's."""
    batched, plain = entity(batching=Batching(32, 2.0)), entity()
    docker = DockerProvider(ProviderContext("p", tmp_path, tmp_path / "state"))
    assert docker.entity_problems(batched) == [("batching", BATCHING_REFUSED)]
    assert docker.entity_problems(plain) == []
    for server, problems in (("declare", 0), ("mlflow", 1)):
        settings = {"server": server}
        local = LocalProvider(ProviderContext("p", tmp_path, tmp_path / "state", settings))
        found = local.entity_problems(batched)
        assert len(found) == problems and local.entity_problems(plain) == []
        assert all(f == "batching" and "providers.local.server is mlflow" in m for f, m in found)
