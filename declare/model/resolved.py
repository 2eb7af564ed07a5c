"""A model URI pinned at plan time: the value resolve produces and every later stage reads.

Data only: no MLflow, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResolvedModel:
    """An MLflow model URI pinned at plan time.

    `uri` is what the manifest wrote; `pinned_uri` names exactly one model
    (`models:/name/3` for a registry alias, or the URI itself when it is already exact).
    `source` is where the artifacts are (a path or URI a scoring server can load).
    """

    uri: str
    pinned_uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    source: str = ""
    # Name of the input-example file inside the model's artifacts, when it has one
    # (MLflow writes serving_input_example.json beside MLmodel).
    input_example: str | None = None
    # Hash of the model's environment (python version + requirements): images are per env.
    env_hash: str = ""
    # The model's signature as MLflow stores it (JSON strings), for review warnings.
    signature: Mapping[str, str] | None = None

    def describe(self) -> str:
        if self.name and self.version:
            pinned = f"{self.name} v{self.version}"
            return f"{pinned} (@{self.alias})" if self.alias else pinned
        return self.pinned_uri

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "pinned_uri": self.pinned_uri,
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "source": self.source,
            "input_example": self.input_example,
            "env_hash": self.env_hash,
            "signature": dict(self.signature) if self.signature else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResolvedModel:
        sig = data.get("signature")
        return cls(
            uri=data["uri"],
            pinned_uri=data["pinned_uri"],
            name=data.get("name"),
            version=data.get("version"),
            alias=data.get("alias"),
            run_id=data.get("run_id"),
            source=data.get("source", ""),
            input_example=data.get("input_example"),
            env_hash=data.get("env_hash", ""),
            signature=dict(sig) if sig else None,
        )
