"""declare import databricks: a Databricks GET response -> a manifest that declare accepts.

Golden file: tests/unit/testdata/import/get-endpoint.yaml is the import of get-endpoint.json
(rewrite with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_import_databricks.py`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from declare.errors import ConfigError
from declare.importers.databricks import import_response, to_yaml
from declare.manifests import load_manifest_file
from tests.unit.conftest import Ran

TESTDATA = Path(__file__).parent / "testdata" / "import"
GET = TESTDATA / "get-endpoint.json"


def test_golden_and_read_only_fields_dropped() -> None:
    imported = import_response(json.loads(GET.read_text()))
    text = to_yaml(imported)
    golden = TESTDATA / "get-endpoint.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
    dropped = set(imported[0].dropped)
    for field in (
        "id",
        "state",
        "creator",
        "creation_timestamp",
        "last_updated_timestamp",
        "permission_level",
        "config.config_version",
        "config.served_entities[0].state",
        "config.served_entities[1].creation_timestamp",
        "config.auto_capture_config.state",
    ):
        assert field in dropped, field
    for kept in ("rate_limits", "tags", "route_optimized", "config.auto_capture_config"):
        assert kept not in dropped


def test_imported_manifest_means_the_same_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "ads.yaml"
    path.write_text(to_yaml(import_response(json.loads(GET.read_text()))))
    specs, problems = load_manifest_file(path)
    assert problems == []
    (spec,) = specs
    assert spec.name == "ads-ranker"
    assert [(e.name, e.model_uri, e.replica_count) for e in spec.entities] == [
        ("ranker-3", "models:/main.ads.ranker/3", 2),
        ("ranker-4", "models:/main.ads.ranker/4", 1),
    ]
    assert [(r.served_entity_name, r.traffic_percentage) for r in spec.routes] == [
        ("ranker-3", 90),
        ("ranker-4", 10),
    ]
    assert spec.entity("ranker-3").environment_vars["API_KEY"] == "{{secrets/ads/api_key}}"
    assert spec.tags == {"team": "ads", "cost-center": "1234"}


def test_cli_import_to_file_then_validate(tmp_path: Path, declare_cli: Callable[..., Ran]) -> None:
    result = declare_cli("import", "databricks", str(GET), "--out", "ads.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dropped read-only or unknown fields: " in result.stderr
    validated = declare_cli("validate", ".", cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert "The configuration is valid: 1 endpoint(s) (ads-ranker)" in validated.stdout
    # The written manifest is already in `declare fmt`'s canonical layout.
    assert declare_cli("fmt", "--check", ".", cwd=tmp_path).returncode == 0
    again = declare_cli("import", "databricks", str(GET), "--out", "ads.yaml", cwd=tmp_path)
    assert again.returncode == 1 and "pass --force" in again.stderr


def test_cli_import_from_stdin_to_stdout(tmp_path: Path, declare_cli: Callable[..., Ran]) -> None:
    result = declare_cli("import", "databricks", "-", cwd=tmp_path, stdin=GET.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stdout == (TESTDATA / "get-endpoint.yaml").read_text()


def test_list_response_gives_one_document_per_endpoint() -> None:
    one = json.loads(GET.read_text())
    two = {**one, "name": "ads-ranker-eu"}
    text = to_yaml(import_response({"endpoints": [one, two]}))
    assert text.count("\n---\n") == 1
    assert "name: ads-ranker-eu\n" in text


def test_external_model_is_refused_with_its_place() -> None:
    data = json.loads((TESTDATA / "list-external.json").read_text())
    with pytest.raises(
        ConfigError,
        match=r"endpoint 'chat': config.served_entities\[0\] is an "
        r"external model \(gpt\); declare serves custom MLflow models only",
    ):
        import_response(data)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("[1, 2]", "not a Databricks serving endpoint"),
        ('{"name": "x"}', "endpoint 'x' has no config"),
        ("{not json", "not JSON"),
    ],
)
def test_cli_bad_input_is_a_clear_error(
    tmp_path: Path, payload: str, message: str, declare_cli: Callable[..., Ran]
) -> None:
    result = declare_cli("import", "databricks", "-", cwd=tmp_path, stdin=payload)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: <stdin>")
    assert message in result.stderr and "Traceback" not in result.stderr
