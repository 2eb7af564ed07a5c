"""Resolve MLflow model URIs to pinned models, through a real MLflow registry.

Accepts `models:/name/version`, `models:/name@alias`, `models:/name/latest`,
`runs:/run_id/path` and a local path (absolute or relative to the project folder). An alias is
resolved here, at plan time, so the plan shows the version it points to now; when the alias
moves, the next plan sees a new pinned model and proposes the update.

Reads only small metadata files (MLmodel, requirements.txt, python_env.yaml); never loads the
model. Does not know manifests, state or providers.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from declare.errors import ModelResolutionError
from declare.model import ResolvedModel, short_hash

_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[^/]+)/?$")
_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")

EXAMPLE_FILE = "serving_input_example.json"


class Resolver:
    """Pins model URIs against one MLflow tracking/registry pair; caches within one run."""

    def __init__(self, tracking_uri: str, registry_uri: str, project_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self.project_dir = project_dir
        self._cache: dict[str, ResolvedModel] = {}
        self._client: Any = None

    @property
    def model_env(self) -> dict[str, str]:
        """What a replica needs in its environment to load models from this registry."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_REGISTRY_URI": self.registry_uri}

    def _mlflow(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
            )
        return self._client

    def resolve(self, uri: str) -> ResolvedModel:
        if uri not in self._cache:
            self._cache[uri] = self._resolve(uri)
        return self._cache[uri]

    def _resolve(self, uri: str) -> ResolvedModel:
        from mlflow.exceptions import MlflowException

        try:
            if m := _MODELS_ALIAS.match(uri):
                return self._registry(uri, m["name"], alias=m["alias"])
            if m := _MODELS_VERSION.match(uri):
                return self._registry(uri, m["name"], version=m["version"])
            if uri.startswith("models:/"):
                raise ModelResolutionError(
                    f"model URI {uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS"
                )
            if uri.startswith("runs:/"):
                return self._run(uri)
            return self._path(uri)
        except MlflowException as exc:
            raise ModelResolutionError(f"model {uri!r}: {_first_line(exc)}") from None
        except OSError as exc:
            raise ModelResolutionError(f"model {uri!r}: {exc}") from None

    def _registry(
        self, uri: str, name: str, version: str | None = None, alias: str | None = None
    ) -> ResolvedModel:
        from mlflow.exceptions import MlflowException

        client = self._mlflow()
        try:
            client.get_registered_model(name)
        except MlflowException:
            known = sorted(rm.name for rm in client.search_registered_models(max_results=50))
            hint = f"; registered models: {', '.join(known)}" if known else "; none registered"
            raise ModelResolutionError(
                f"model {uri!r}: no registered model named {name!r} in the registry at "
                f"{_redact(self.registry_uri)}{hint}"
            ) from None
        if alias is not None:
            try:
                mv = client.get_model_version_by_alias(name, alias)
            except MlflowException:
                raise ModelResolutionError(
                    f"model {uri!r}: alias {alias!r} is not set on registered model {name!r}"
                ) from None
        elif version is not None and version.lower() == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ModelResolutionError(f"model {uri!r}: {name!r} has no versions")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            assert version is not None
            try:
                mv = client.get_model_version(name, version)
            except MlflowException:
                versions = sorted(
                    int(v.version) for v in client.search_model_versions(f"name='{name}'")
                )
                raise ModelResolutionError(
                    f"model {uri!r}: registered model {name!r} has no version {version!r}; "
                    f"versions: {', '.join(map(str, versions)) or 'none'}"
                ) from None
        source = client.get_model_version_download_uri(name, mv.version)
        meta = self._metadata(source)
        return ResolvedModel(
            uri=uri,
            pinned_uri=f"models:/{name}/{mv.version}",
            name=name,
            version=str(mv.version),
            alias=alias,
            run_id=mv.run_id or None,
            source=source,
            **meta,
        )

    def _run(self, uri: str) -> ResolvedModel:
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        source = RunsArtifactRepository.get_underlying_uri(uri)
        run_id = uri[len("runs:/") :].split("/", 1)[0]
        return ResolvedModel(
            uri=uri, pinned_uri=uri, run_id=run_id, source=source, **self._metadata(source)
        )

    def _path(self, uri: str) -> ResolvedModel:
        raw = uri[len("file://") :] if uri.startswith("file://") else uri
        path = Path(raw)
        if not path.is_absolute():
            path = (self.project_dir / path).resolve()
        if not (path / "MLmodel").is_file():
            raise ModelResolutionError(f"model path {uri!r}: no MLmodel file in {path}")
        return ResolvedModel(
            uri=uri, pinned_uri=str(path), source=str(path), **self._metadata(str(path))
        )

    def _metadata(self, source: str) -> dict[str, Any]:
        """input_example, env_hash and signature from the model's small metadata files."""
        files = _fetch_small_files(source, ("MLmodel", "requirements.txt", "python_env.yaml"))
        if "MLmodel" not in files:
            raise ModelResolutionError(f"no MLmodel file at {_redact(source)}")
        try:
            mlmodel = yaml.safe_load(files["MLmodel"]) or {}
        except yaml.YAMLError as exc:
            raise ModelResolutionError(f"unreadable MLmodel at {_redact(source)}: {exc}") from None
        example = None
        if mlmodel.get("saved_input_example_info") or EXAMPLE_FILE in files.get("_listing", ""):
            example = EXAMPLE_FILE
        env_hash = short_hash(
            {
                "requirements": files.get("requirements.txt", ""),
                "python_env": files.get("python_env.yaml", ""),
            }
        )
        signature = mlmodel.get("signature")
        sig = (
            {k: str(v) for k, v in signature.items() if v} if isinstance(signature, dict) else None
        )
        return {"input_example": example, "env_hash": env_hash, "signature": sig or None}


def _fetch_small_files(source: str, names: tuple[str, ...]) -> dict[str, str]:
    import mlflow.artifacts

    out: dict[str, str] = {}
    local = _local_dir(source)
    if local is not None:
        for name in names:
            f = local / name
            if f.is_file():
                out[name] = f.read_text()
        out["_listing"] = " ".join(p.name for p in local.iterdir()) if local.is_dir() else ""
        return out
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{source.rstrip('/')}/{name}", dst_path=tmp
                )
            except Exception:
                continue
            out[name] = Path(path).read_text()
    return out


def _local_dir(source: str) -> Path | None:
    if source.startswith("file://"):
        return Path(source[len("file://") :])
    if "://" not in source and not source.startswith(("models:", "runs:")):
        return Path(source)
    return None


def load_input_example(model: ResolvedModel) -> tuple[str, bytes] | None:
    """The model's serving input example as (content type, body), or None when it has none."""
    if not model.input_example:
        return None
    files = _fetch_small_files(model.source, (model.input_example,))
    text = files.get(model.input_example)
    if text is None:
        return None
    try:
        json.loads(text)
    except ValueError:
        return None
    return "application/json", text.encode()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(uri: str) -> str:
    """A URI without credentials (user:password@) for messages."""
    return re.sub(r"//[^/@]+@", "//***@", uri)
