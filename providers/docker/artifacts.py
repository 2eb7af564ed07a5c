"""A model's artifacts as a replica container sees them: read-only at /model.

The artifacts are mounted, not copied into the image: an image holds an environment shared
by every model with the same requirements, and the container cannot alter the registry's
files. A model on a local path is mounted from there; artifacts elsewhere (s3://, http://,
...) are downloaded once on the host into `state_dir/docker/models/<hash of the source>`.
An engine on another machine (tcp://, ssh://) cannot see the host's folders: there the
folder is copied into the container (`model_tar`) before it starts.

What it does not do: create or start containers (`providers.docker.containers`), or read the
model's requirements (`providers.docker.image`).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

from declare.errors import ProviderError
from declare.model import ResolvedModel
from providers._shared import is_local_source, local_source_path
from providers.docker.errors import first_line

__all__ = ["MODEL_DIR", "ModelArtifacts", "model_mounts", "model_tar"]

MODEL_DIR = "/model"


class ModelArtifacts:
    """The host folders of models to mount; downloads are kept under `models_dir`."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir

    def folder(self, model: ResolvedModel, where: str) -> Path:
        """The host folder holding `model`'s MLmodel (downloaded first when not local)."""
        source = model.source or model.pinned_uri
        if is_local_source(source):
            path = local_source_path(source)
            if not (path / "MLmodel").is_file():
                raise ProviderError(
                    f"{where}model {model.describe()} has no MLmodel at {path}; "
                    "was it deleted since the plan was made?"
                )
            return path.resolve()
        target = self.models_dir / hashlib.sha256(source.encode()).hexdigest()[:16]
        if (target / "MLmodel").is_file():
            return target
        import mlflow.artifacts

        try:
            fetched = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(target.with_name(target.name + ".partial"))
            )
        except Exception as exc:
            raise ProviderError(
                f"{where}cannot download the artifacts of {model.describe()} from {source}: "
                f"{first_line(exc)}"
            ) from None
        os.replace(fetched, target)
        return target


def model_mounts(folder: Path) -> list[Any]:
    """The `mounts` of a container on a local engine: `folder` read-only at /model."""
    import docker.types

    return [docker.types.Mount(target=MODEL_DIR, source=str(folder), type="bind", read_only=True)]


def model_tar(folder: Path) -> bytes:
    """The model folder as a tar whose top folder is /model (for engines on other hosts)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(folder), arcname=MODEL_DIR.lstrip("/"), recursive=True)
    return buffer.getvalue()
