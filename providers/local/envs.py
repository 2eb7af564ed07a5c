"""Model environments of the local provider (`providers.local.environments: per_model`).

A model environment is a virtualenv under `state_dir/local/envs/<key>` holding what the
model's MLflow artifacts ask for (requirements.txt beside its MLmodel, its `mlflow` line
installed as `mlflow-skinny` at the same version, MLflow's own version when the model names
none) and what the replica servers need (pandas, numpy, httptools for declare.serve; uvicorn,
fastapi and uvloop for MLflow's). The list is made as the docker provider makes an image's
(`providers.docker.image.requirements_for`). `key` is a hash of the environment's format,
the Python version (the model's `python_env.yaml`, else the host's) and that list: every
served entity whose model needs the same shares one environment, built once.

A build is `uv venv` with a Python found on the host (never downloaded) and `uv pip install
--only-binary :all:` from the index; when the index cannot be reached, the same from uv's
wheel cache only (`--offline`: what earlier builds fetched). declare.serve runs in the
environment from declare's own source: a `.pth` file puts a folder on the environment's path
that holds `declare/__init__.py` (empty) and `declare/serve` (a link to declare's), and
nothing else of declare or of its virtualenv. Every step's output goes to
`state_dir/local/envs/<key>.log`; `.complete` in the folder says the build finished.

`ModelEnvironments` is what the provider uses: the plans of one state folder's
environments, their builds for the plan, and a built one's interpreter.

`problems` is the plan-time check of an environment not built yet: its Python is on the
host, and its requirements resolve to wheels for it (`uv pip compile`), else a ProviderError
naming the model and the requirement.

What it does not do: decide when to build (the planner), start replicas
(`providers.local.launch`), remove environments.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import declare
from declare.errors import ProviderError
from declare.model import ResolvedModel
from declare.provider import BuildInfo
from providers._shared import exclusive
from providers.docker.build import tail
from providers.docker.image import (
    flavor_requirements,
    model_files,
    model_python,
    requirements_for,
)

__all__ = [
    "ENV_FORMAT",
    "EnvPlan",
    "ModelEnvironments",
    "build_env",
    "env_plan",
    "find_uv",
    "problems",
]

ENV_FORMAT = 1  # bump when the environment's layout changes: every key changes with it
# declare.serve's own needs beyond MLflow's scoring server (which requirements_for adds).
SERVE_REQUIREMENTS = ("httptools",)
_NETWORK = re.compile(
    r"error sending request|failed to fetch|dns error|connection (refused|reset)|timed out|"
    r"network|certificate|tls",
    re.IGNORECASE,
)
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_DECORATION = re.compile(r"^[\s\u00d7\u2570\u2500\u25b6\u2502]+")  # uv's error tree


@dataclass(frozen=True)
class EnvPlan:
    """One model environment: what goes in, and where it lives."""

    key: str
    python: str  # major.minor
    requirements: tuple[str, ...]
    folder: Path

    @property
    def python_bin(self) -> Path:
        return self.folder / "bin" / "python"

    @property
    def log_path(self) -> Path:
        return self.folder.with_name(f"{self.folder.name}.log")

    @property
    def built(self) -> bool:
        return (self.folder / ".complete").is_file() and self.python_bin.exists()


def find_uv() -> str | None:
    """The `uv` executable: the `uv` package's, else one on PATH."""
    try:
        import uv

        found = uv.find_uv_bin()
        if found:
            return str(found)
    except (ImportError, FileNotFoundError):
        pass
    return shutil.which("uv")


def env_plan(model: ResolvedModel, envs_dir: Path) -> EnvPlan:
    """The environment that serves `model`; ProviderError when its files cannot be read."""
    files = model_files(model, ("requirements.txt", "python_env.yaml", "MLmodel"))
    if "MLmodel" not in files:
        raise ProviderError(f"model {model.describe()}: no MLmodel file at {model.source}")
    python = model_python(files) or f"{sys.version_info.major}.{sys.version_info.minor}"
    from mlflow.version import VERSION as mlflow_version

    requirements = requirements_for(
        files.get("requirements.txt", ""),
        "mlflow-skinny",
        SERVE_REQUIREMENTS,
        mlflow_version,
        flavor_requirements(files["MLmodel"]),
    )
    # An unversioned `mlflow` gets declare's own MLflow version: the key then names one
    # environment, not whatever the index holds on the day of the build.
    requirements = tuple(
        f"mlflow-skinny=={mlflow_version}" if r == "mlflow-skinny" else r for r in requirements
    )
    key = hashlib.sha256(
        json.dumps(
            {"format": ENV_FORMAT, "python": python, "requirements": requirements},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return EnvPlan(key=key, python=python, requirements=requirements, folder=envs_dir / key)


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_NATIVE_TLS": "1", "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


def _uv(uv: str | None) -> str:
    if uv is None:
        raise ProviderError(
            "providers.local.environments is per_model, and no `uv` was found (the Python "
            "package `uv`, a dependency of declare, or a `uv` on PATH): install it"
        )
    return uv


def find_python(uv: str, version: str) -> str | None:
    """An interpreter of Python `version` on this host (uv's search; none downloaded)."""
    result = _run([uv, "python", "find", "--no-python-downloads", version])
    path = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
    return path[0] if path else None


def _named_requirements(plan: EnvPlan, text: str) -> list[str]:
    """The requirement lines of `plan` whose package `text` (uv's error) names."""
    lowered = text.lower()
    out = []
    for line in plan.requirements:
        m = _NAME.match(line)
        if m is None:
            continue
        name = m[1].lower()
        if re.search(rf"(?<![a-z0-9_.-]){re.escape(name)}(?![a-z0-9_.-])", lowered) or re.search(
            rf"(?<![a-z0-9_.-]){re.escape(name.replace('-', '_'))}(?![a-z0-9_.-])", lowered
        ):
            out.append(line)
    return out


def _reason(text: str) -> str:
    """uv's error, on one line without its decorations."""
    lines = [_DECORATION.sub("", line).strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith(("Using ", "Resolved "))]
    return " ".join(kept)[-600:]


def problems(plan: EnvPlan, model: ResolvedModel, uv: str | None) -> None:
    """Raise ProviderError naming `model` and what it needs that this host cannot give:
    its Python version, or a requirement with no wheel (from the index, else uv's cache)."""
    uv = _uv(uv)
    if find_python(uv, plan.python) is None:
        raise ProviderError(
            f"model {model.describe()} needs Python {plan.python} (its python_env.yaml), "
            f"which is not on this host; install Python {plan.python} or log the model "
            "with a Python this host has"
        )
    argv = [
        uv, "pip", "compile", "-", "--quiet", "--no-header",
        "--python-version", plan.python, "--only-binary", ":all:",
    ]  # fmt: skip
    text = "\n".join(plan.requirements) + "\n"
    result = subprocess.run(
        argv,
        input=text,
        capture_output=True,
        text=True,
        env={**os.environ, "UV_NATIVE_TLS": "1", "UV_PYTHON_DOWNLOADS": "never"},
        check=False,
    )
    offline = ""
    if result.returncode != 0 and _NETWORK.search(result.stderr):
        offline = " (the package index cannot be reached; looked in uv's wheel cache)"
        result = subprocess.run(
            [*argv, "--offline"],
            input=text,
            capture_output=True,
            text=True,
            env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
            check=False,
        )
    if result.returncode == 0:
        return
    named = _named_requirements(plan, result.stderr)
    which = f"requirement {', '.join(named)}" if named else "its requirements"
    raise ProviderError(
        f"model {model.describe()}: {which} cannot be installed from wheels for Python "
        f"{plan.python} on this platform{offline}: {_reason(result.stderr)}"
    )


def _step(argv: Sequence[str], log: TextIO) -> subprocess.CompletedProcess[str]:
    log.write("== " + " ".join(str(a) for a in argv) + "\n")
    result = _run(argv)
    log.write(result.stdout)
    return result


class _BuildFailed(Exception):
    pass


def _shim(plan: EnvPlan) -> Path:
    """The folder on the environment's path with declare.serve, and nothing else of declare."""
    shim = plan.folder / "declare-serve"
    package = shim / "declare"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        '"""declare\'s replica server alone (declare.serve), in a model environment."""\n'
    )
    serve = package / "serve"
    if serve.is_symlink() or serve.exists():
        serve.unlink()
    serve.symlink_to(Path(declare.__file__).resolve().parent / "serve", target_is_directory=True)
    site = plan.folder / "lib" / f"python{plan.python}" / "site-packages"
    (site / "declare_serve.pth").write_text(f"{shim}\n")
    return shim


def build_env(plan: EnvPlan, uv: str | None) -> float:
    """Build `plan`'s environment unless it is built; the seconds it took (0 when it was)."""
    uv = _uv(uv)
    started = time.monotonic()
    plan.folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder per environment, across threads and processes.
    with exclusive(plan.folder.with_name(f"{plan.folder.name}.lock")):
        if plan.built:
            return 0.0
        shutil.rmtree(plan.folder, ignore_errors=True)
        with open(plan.log_path, "w") as log:
            try:
                log.write("== requirements:\n" + "".join(f"   {r}\n" for r in plan.requirements))
                python = find_python(uv, plan.python)
                if python is None:
                    raise _BuildFailed(f"Python {plan.python} is not on this host")
                if _step([uv, "venv", "--python", python, str(plan.folder)], log).returncode:
                    raise _BuildFailed("uv venv failed")
                requirements = plan.folder / "requirements.txt"
                requirements.write_text("\n".join(plan.requirements) + "\n")
                install = [
                    uv, "pip", "install", "--python", str(plan.python_bin),
                    "--only-binary", ":all:", "--requirement", str(requirements),
                ]  # fmt: skip
                result = _step(install, log)
                if result.returncode and _NETWORK.search(result.stdout):
                    log.write("== the index cannot be reached: from uv's wheel cache only\n")
                    result = _step([*install, "--offline"], log)
                if result.returncode:
                    raise _BuildFailed(f"uv pip install exited with {result.returncode}")
                _shim(plan)
                check = [
                    str(plan.python_bin), "-c",
                    "import declare.serve.main, mlflow.pyfunc.scoring_server, httptools",
                ]  # fmt: skip
                if _step(check, log).returncode:
                    raise _BuildFailed("the environment cannot import declare.serve and MLflow")
                seconds = time.monotonic() - started
                log.write(f"== built in {seconds:.1f}s\n")
                (plan.folder / ".complete").write_text(
                    json.dumps({"python": plan.python, "seconds": round(seconds, 1)}) + "\n"
                )
            except (_BuildFailed, OSError) as exc:
                log.write(f"== build failed: {exc}\n")
                log.flush()
                raise ProviderError(
                    f"building the model environment {plan.key} failed: {exc}\n"
                    f"  build log: {plan.log_path}\n  last lines of the build log:\n"
                    + "\n".join(f"    {line}" for line in tail(plan.log_path, 30).splitlines())
                ) from None
    return seconds


class ModelEnvironments:
    """The model environments of one state folder, as the local provider uses them."""

    def __init__(self, envs_dir: Path) -> None:
        self.envs_dir = envs_dir
        self._plans: dict[str, EnvPlan] = {}
        self._checked: set[str] = set()
        self._lock = threading.Lock()

    def plan(self, model: ResolvedModel) -> EnvPlan:
        """The environment of `model` (read once per model source, for this object's life)."""
        cache_key = f"{model.source}|{model.pinned_uri}|{model.env_hash}"
        with self._lock:
            known = self._plans.get(cache_key)
        if known is None:
            known = env_plan(model, self.envs_dir)
            with self._lock:
                self._plans[cache_key] = known
        return known

    def build_info(self, model: ResolvedModel) -> BuildInfo:
        """The plan's build; an environment not built yet is checked first (`problems`:
        ProviderError naming the model and what this host cannot give it)."""
        plan = self.plan(model)
        cached = plan.built
        if not cached and plan.key not in self._checked:
            problems(plan, model, find_uv())
            self._checked.add(plan.key)
        return self._info(plan, cached)

    def build(self, model: ResolvedModel) -> BuildInfo:
        """Build the environment of `model` unless it is built."""
        plan = self.plan(model)
        build_env(plan, find_uv())
        return self._info(plan, True)

    def interpreter(self, model: ResolvedModel, where: str) -> Path:
        """The Python of `model`'s built environment; ProviderError when it is not built."""
        plan = self.plan(model)
        if not plan.built:
            raise ProviderError(
                f"{where}: the model environment {plan.key} of {model.describe()} is not "
                f"built in {self.envs_dir} (removed since the plan was made?); run "
                "`declare apply` again to build it"
            )
        return plan.python_bin

    @staticmethod
    def _info(plan: EnvPlan, cached: bool) -> BuildInfo:
        ref = f"environment {plan.key}"
        return BuildInfo(key=plan.key, needed=True, cached=cached, ref=ref, kind="environment")
