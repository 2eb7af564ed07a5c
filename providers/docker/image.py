"""Model-environment images: what goes into one, and its content-hash tag.

An image holds a model *environment*, not a model: the base image plus a virtualenv at
/opt/declare-venv with the model's requirements (requirements.txt beside its MLmodel, its
`mlflow` line installed as `mlflow-skinny`) and what MLflow's scoring server needs. Two
served entities whose models have the same requirements share one image; the model's
artifacts are mounted into each replica read-only (see `providers.docker.artifacts`).

The tag is `<image_repo>:<key>`, `key` a hash of everything that goes in (format, base image
reference, Python version, platform, the final requirement list), so a build is skipped
when the tag exists on the engine.

Does not build the image (`providers.docker.build`), start replicas, or decide when to build
(the planner does).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from declare.errors import ProviderError
from declare.model import ResolvedModel
from providers._shared import is_local_source, local_source_path

__all__ = [
    "IMAGE_FORMAT",
    "RUNTIME_REQUIREMENTS",
    "ImagePlan",
    "flavor_requirements",
    "image_plan",
    "model_files",
    "model_python",
    "requirements_for",
]

IMAGE_FORMAT = 1  # bump when the image layout changes: every key (and tag) changes with it
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


def model_files(model: ResolvedModel, names: Sequence[str]) -> dict[str, str]:
    """The text of small files beside the model's MLmodel (those that exist)."""
    source = model.source or model.pinned_uri
    out: dict[str, str] = {}
    if is_local_source(source):
        folder = local_source_path(source)
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


def model_python(files: dict[str, str]) -> str | None:
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
    wanted = model_python(files)
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
