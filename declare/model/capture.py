"""Inference tables: which endpoints capture their requests, and where the table lives.

`CaptureTarget` is read from an endpoint manifest's `config.auto_capture_config` (Databricks'
legacy inference tables) or `ai_gateway.inference_table_config` (its AI Gateway ones), the
first of them that says `enabled: true`. Databricks names the table
`<catalog_name>.<schema_name>.<table_name_prefix>_payload`; declare keeps it as a Delta
table in the folder `<capture root>/<catalog_name>/<schema_name>/<table_name_prefix>_payload`
(`relative_path`), the capture root being set in declare.yaml (`capture.root`, default
`<state folder>/capture`). A missing catalog is `main`, a missing schema `default` (Unity
Catalog's defaults) and a missing prefix the endpoint's name.

Data only: no I/O. The gateway writes the table (`declare.gateway.capture`); this module
does not know how.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CATALOG = "main"
DEFAULT_SCHEMA = "default"
TABLE_SUFFIX = "_payload"
# The manifest sections that turn capture on, in the order they are read.
SECTIONS = (("auto_capture_config",), ("ai_gateway", "inference_table_config"))
# A name that is one folder: letters, digits, '_' and '-', not starting with '-' or '.'.
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")


@dataclass(frozen=True)
class CaptureTarget:
    """The inference table of one endpoint: Unity Catalog's three names."""

    catalog_name: str
    schema_name: str
    table_name_prefix: str

    @property
    def table_name(self) -> str:
        """Databricks' full name: `catalog.schema.prefix_payload`."""
        return f"{self.catalog_name}.{self.schema_name}.{self.table_name_prefix}{TABLE_SUFFIX}"

    @property
    def relative_path(self) -> str:
        """The table's folder below the capture root: `catalog/schema/prefix_payload`."""
        return f"{self.catalog_name}/{self.schema_name}/{self.table_name_prefix}{TABLE_SUFFIX}"

    def path(self, root: Path) -> Path:
        return (
            root / self.catalog_name / self.schema_name / f"{self.table_name_prefix}{TABLE_SUFFIX}"
        )

    def to_json(self) -> dict[str, str]:
        return {
            "catalog_name": self.catalog_name,
            "schema_name": self.schema_name,
            "table_name_prefix": self.table_name_prefix,
        }

    @classmethod
    def from_json(cls, data: Any) -> CaptureTarget:
        """The value of `to_json`; ValueError saying which name is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("capture must be an object")
        names = []
        for key in ("catalog_name", "schema_name", "table_name_prefix"):
            value = data.get(key)
            if not isinstance(value, str) or not NAME.match(value):
                raise ValueError(
                    f"capture.{key} must be 1 to 128 letters, digits, '_' or '-', got {value!r}"
                )
            names.append(value)
        return cls(*names)


def _section(extra: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    value: Any = extra
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, Mapping) else None


def capture_target(extra: Mapping[str, Any], endpoint: str) -> CaptureTarget | None:
    """Where endpoint `endpoint` captures, from its recorded Databricks sections (`extra`),
    or None when neither section is enabled."""
    for path in SECTIONS:
        section = _section(extra, path)
        if section is None or section.get("enabled") is not True:
            continue
        return CaptureTarget(
            str(section.get("catalog_name") or DEFAULT_CATALOG),
            str(section.get("schema_name") or DEFAULT_SCHEMA),
            str(section.get("table_name_prefix") or endpoint),
        )
    return None
