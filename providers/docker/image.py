"""Model-environment images: what goes into one, its content-hash tag, and how it is built.

An image holds a model *environment*, not a model: the base image plus a virtualenv at
/opt/declare-venv with the model's requirements (requirements.txt beside its MLmodel, its
`mlflow` line installed as `mlflow-skinny`) and what MLflow's scoring server needs. Two
served entities whose models have the same requirements share one image; the model's
artifacts are mounted into each replica read-only (see `providers.docker.provider`).

The tag is `<image_repo>:<key>`, `key` a hash of everything that goes in (format, base image
reference, Python version, platform, the final requirement list), so a build is skipped
when the tag exists on the engine.

The build needs no network inside the engine and works behind a TLS-intercepting proxy:
wheels are resolved on the host, with the host's pip and its CA settings, into a cache
keyed by the requirements' hash (`pip download --only-binary=:all: --python-version 3.11
--platform manylinux...`), then copied into a build container that has no network and
installed with `pip install --no-index --find-links`. The container is committed as the
image, so the wheels (removed before the commit) take no room in it. Every step's output
goes to the build log, `state_dir/docker/builds/<key>.log`, whose tail a failure shows.

Does not start replicas and does not decide when to build (the planner does).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from declare.errors import ProviderError
from declare.model import ResolvedModel
from providers._shared import exclusive

__all__ = [
    "IMAGE_FORMAT",
    "VENV",
    "ImagePlan",
    "build_image",
    "image_plan",
    "model_files",
    "tail",
]

IMAGE_FORMAT = 1  # bump when the image layout changes: every key (and tag) changes with it
VENV = "/opt/declare-venv"
WHEELS_IN_CONTAINER = "/tmp/declare-wheels"
# What MLflow's scoring server needs beyond mlflow-skinny, added when a model does not list
# them. uvloop: uvicorn without it adds ~44 ms per response (see the local provider).
RUNTIME_REQUIREMENTS = ("pandas", "numpy", "uvicorn", "fastapi", "uvloop")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class ImagePlan:
    """Everything that goes into one environment image, and its tag."""

    key: str
    tag: str
    base_image: str
    python_version: str
    arch: str
    requirements: tuple[str, ...]

    @property
    def requirements_hash(self) -> str:
        """Key of the host's wheel cache: the same requirements for the same platform."""
        text = "\n".join([self.python_version, self.arch, *self.requirements])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(
            f"{tag}_{self.arch}" for tag in ("manylinux2014", "manylinux_2_17", "manylinux_2_28")
        )


def _is_local(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("", "file")


def local_path(source: str) -> Path:
    if source.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(source).path))
    return Path(source)


def model_files(model: ResolvedModel, names: Sequence[str]) -> dict[str, str]:
    """The text of small files beside the model's MLmodel (those that exist)."""
    source = model.source or model.pinned_uri
    out: dict[str, str] = {}
    if _is_local(source):
        folder = local_path(source)
        for name in names:
            path = folder / name
            if path.is_file():
                out[name] = path.read_text()
        return out
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                fetched = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{source.rstrip('/')}/{name}", dst_path=tmp
                )
            except Exception:  # a missing file is not an error here
                continue
            out[name] = Path(fetched).read_text()
    return out


def _model_python(files: dict[str, str]) -> str | None:
    """major.minor of the Python the model was logged with (python_env.yaml, MLmodel)."""
    for name, path in (("python_env.yaml", ("python",)), ("MLmodel", ("flavors",))):
        if name not in files:
            continue
        try:
            data = yaml.safe_load(files[name]) or {}
        except yaml.YAMLError:
            continue
        if path == ("python",):
            value = data.get("python")
        else:
            value = ((data.get("flavors") or {}).get("python_function") or {}).get("python_version")
        if value:
            m = re.match(r"^(\d+\.\d+)", str(value))
            if m:
                return m[1]
    return None


def flavor_requirements(mlmodel_text: str) -> tuple[str, ...]:
    """Packages a model's flavor needs to load that its requirements may not name.

    A scikit-learn model saved in the skops format needs `skops`; MLflow lists it when it
    infers the requirements, but not when the model was logged with explicit ones.
    """
    try:
        data = yaml.safe_load(mlmodel_text) or {}
    except yaml.YAMLError:
        return ()
    flavors = data.get("flavors") if isinstance(data, dict) else None
    sklearn = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if isinstance(sklearn, dict) and sklearn.get("serialization_format") == "skops":
        return ("skops",)
    return ()


def requirements_for(
    requirements_txt: str,
    mlflow_package: str,
    extra: Sequence[str],
    mlflow_version: str,
    flavor_needs: Sequence[str] = (),
) -> tuple[str, ...]:
    """The pip requirement lines an image installs, in a stable order.

    The model's own lines come first (comments and pip options dropped), its `mlflow`
    requirement installed as `mlflow_package` with the same version specifier, then
    `extra`, then what the model's flavor and the scoring server need and the model did not
    name.
    """
    lines: list[str] = []
    names: set[str] = set()
    for raw in requirements_txt.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        m = _NAME.match(line)
        if m is None:
            lines.append(line)
            continue
        name, rest = m[1], m[3]
        if _canonical(name) == "mlflow" and mlflow_package != "mlflow":
            name = mlflow_package
            line = f"{name}{rest}"
        names.add(_canonical(name))
        lines.append(line)
    if not ({"mlflow", "mlflow-skinny", _canonical(mlflow_package)} & names):
        lines.append(f"{mlflow_package}=={mlflow_version}")
        names.add(_canonical(mlflow_package))
    for line in extra:
        m = _NAME.match(line)
        if m is not None:
            names.add(_canonical(m[1]))
        lines.append(line)
    for name in (*flavor_needs, *RUNTIME_REQUIREMENTS):
        if _canonical(name) not in names:
            names.add(_canonical(name))
            lines.append(name)
    return tuple(lines)


def image_plan(
    model: ResolvedModel,
    *,
    base_image: str,
    python_version: str,
    image_repo: str,
    mlflow_package: str,
    extra: Sequence[str],
    engine_arch: str,
) -> ImagePlan:
    """What image serves `model`: raises ProviderError when it cannot be made."""
    files = model_files(model, ("requirements.txt", "python_env.yaml", "MLmodel"))
    if "MLmodel" not in files:
        raise ProviderError(f"model {model.describe()}: no MLmodel file at {model.source}")
    wanted = _model_python(files)
    if wanted is not None and wanted != python_version:
        raise ProviderError(
            f"model {model.describe()} was logged with Python {wanted}, and the base image "
            f"{base_image} has Python {python_version} (providers.docker.python_version); "
            f"set providers.docker.base_image to an image with Python {wanted}"
        )
    arch = _ARCH.get(engine_arch.lower())
    if arch is None:
        raise ProviderError(
            f"the Docker engine runs on {engine_arch!r}; images can be built for "
            "x86_64 and aarch64 engines"
        )
    from mlflow.version import VERSION as mlflow_version

    requirements = requirements_for(
        files.get("requirements.txt", ""),
        mlflow_package,
        extra,
        mlflow_version,
        flavor_requirements(files["MLmodel"]),
    )
    key = hashlib.sha256(
        json.dumps(
            {
                "format": IMAGE_FORMAT,
                "base": base_image,
                "python": python_version,
                "arch": arch,
                "requirements": requirements,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return ImagePlan(
        key=key,
        tag=f"{image_repo}:{key}",
        base_image=base_image,
        python_version=python_version,
        arch=arch,
        requirements=requirements,
    )


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def fetch_wheels(plan: ImagePlan, cache_root: Path, log: io.TextIOBase) -> Path:
    """The folder of wheels for `plan.requirements`, downloaded on the host once."""
    folder = cache_root / plan.requirements_hash
    done = folder / ".complete"
    # One downloader per cache entry, across threads and processes.
    with exclusive(Path(f"{folder}.lock")):
        if done.is_file():
            log.write(f"== wheels: cached in {folder}\n")
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        partial = folder.with_name(f"{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        (partial / "requirements.txt").write_text("\n".join(plan.requirements) + "\n")
        argv = [
            sys.executable, "-m", "pip", "download",
            "--only-binary=:all:",
            "--python-version", plan.python_version,
            "--implementation", "cp",
            "--abi", "cp" + plan.python_version.replace(".", ""),
            *(arg for p in plan.platforms for arg in ("--platform", p)),
            "--dest", str(partial),
            "--requirement", str(partial / "requirements.txt"),
        ]  # fmt: skip
        log.write("== wheels: " + " ".join(argv) + "\n")
        log.flush()
        started = time.monotonic()
        result = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        log.write(result.stdout)
        if result.returncode != 0:
            raise _BuildStepError(f"pip download exited with {result.returncode}")
        log.write(f"== wheels: downloaded in {time.monotonic() - started:.1f}s\n")
        (partial / ".complete").write_text("")
        os.replace(partial, folder)
    return folder


class _BuildStepError(Exception):
    """A build step failed; the details are in the build log."""


def _wheels_tar(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(folder), arcname=Path(WHEELS_IN_CONTAINER).name, recursive=True)
    return buffer.getvalue()


def _ensure_base(client: Any, base_image: str, log: io.TextIOBase) -> None:
    import docker.errors

    try:
        client.images.get(base_image)
        return
    except docker.errors.ImageNotFound:
        pass
    log.write(f"== base image {base_image} is not on the engine; pulling it\n")
    try:
        client.images.pull(base_image)
    except docker.errors.APIError as exc:
        raise _BuildStepError(
            f"the base image {base_image} is not on the engine and cannot be pulled "
            f"({exc.explanation or exc}); make it there or set providers.docker.base_image"
        ) from None


def build_image(
    client: Any, plan: ImagePlan, cache_root: Path, log_path: Path, labels: dict[str, str]
) -> float:
    """Build `plan.tag` on the engine; return the seconds it took. ProviderError on failure."""
    import docker.errors

    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    container = None
    with open(log_path, "w") as log:
        try:
            log.write(f"== build {plan.tag} from {plan.base_image}\n")
            log.write("== requirements:\n" + "".join(f"   {r}\n" for r in plan.requirements))
            _ensure_base(client, plan.base_image, log)
            wheels = fetch_wheels(plan, cache_root, log)
            script = (
                "set -e; "
                f"python3 -m venv {VENV}; "
                f"{VENV}/bin/python -m pip install --no-index --no-cache-dir "
                f"--disable-pip-version-check --find-links {WHEELS_IN_CONTAINER} "
                f"--requirement {WHEELS_IN_CONTAINER}/requirements.txt; "
                f"{VENV}/bin/python -c 'import mlflow.pyfunc.scoring_server, uvicorn'; "
                f"rm -rf {WHEELS_IN_CONTAINER} /root/.cache"
            )
            log.write(f"== install (no network): {script}\n")
            log.flush()
            container = client.containers.create(
                plan.base_image,
                command=["/bin/sh", "-c", script],
                network_mode="none",
                labels={**labels, "declare.build": plan.key},
            )
            container.put_archive("/tmp", _wheels_tar(wheels))
            container.start()
            result = container.wait()
            log.write(container.logs().decode(errors="replace"))
            code = int(result.get("StatusCode", -1))
            if code != 0:
                raise _BuildStepError(f"installing the requirements exited with {code}")
            container.commit(
                repository=plan.tag.rsplit(":", 1)[0],
                tag=plan.tag.rsplit(":", 1)[1],
                changes=[
                    f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                    "/sbin:/bin",
                    "ENV GIT_PYTHON_REFRESH=quiet",
                    "ENV PYTHONUNBUFFERED=1",
                    "WORKDIR /tmp",
                    *(f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()),
                    f"LABEL declare.env-key={plan.key}",
                ],
            )
            log.write(f"== built {plan.tag} in {time.monotonic() - started:.1f}s\n")
        except (_BuildStepError, docker.errors.DockerException, OSError) as exc:
            log.write(f"== build failed: {exc}\n")
            log.flush()
            raise ProviderError(
                f"building image {plan.tag} failed: {exc}\n  build log: {log_path}\n"
                "  last lines of the build log:\n"
                + "\n".join(f"    {line}" for line in tail(log_path, 30).splitlines())
            ) from None
        finally:
            if container is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)
    return time.monotonic() - started
