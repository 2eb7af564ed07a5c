"""Loading manifests: scenario folders under testdata/manifests/ with golden expected output.

Each scenario folder holds the project's input files and either `expected.json` (the loaded
endpoints, normalized, with their locations) or `expected_errors.txt` (the whole
ManifestError message). Inputs are copied to a temporary project folder before loading.
Set DECLARE_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from declare.config import load_config
from declare.errors import ManifestError
from declare.manifests import (
    discover_manifest_files,
    even_split,
    load_project_manifests,
    load_schema,
    validate_document,
)
from declare.model import EndpointSpec, RolloutPolicy, Route

TESTDATA = Path(__file__).parent / "testdata" / "manifests"
GOLDEN = {"expected.json", "expected_errors.txt"}
UPDATE = os.environ.get("DECLARE_UPDATE_GOLDEN") == "1"
SCENARIOS = sorted(p.name for p in TESTDATA.iterdir() if p.is_dir())


def copy_project(scenario: str, tmp_path: Path) -> Path:
    project = tmp_path / scenario
    project.mkdir()
    for item in (TESTDATA / scenario).iterdir():
        if item.name not in GOLDEN:
            shutil.copy(item, project / item.name)
    return project


def load(project: Path) -> tuple[EndpointSpec, ...]:
    config = load_config(project, {})
    return load_project_manifests(
        project,
        include=config.manifest_include,
        exclude=config.manifest_exclude,
        default_provider=config.default_provider,
    )


def describe(specs: tuple[EndpointSpec, ...]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        data = spec.to_json()
        data["location"] = str(spec.location)
        for entity_json, entity in zip(data["served_entities"], spec.entities, strict=True):
            entity_json["location"] = str(entity.location)
        out.append(data)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_matches_golden(scenario: str, tmp_path: Path) -> None:
    project = copy_project(scenario, tmp_path)
    folder = TESTDATA / scenario
    try:
        specs = load(project)
    except ManifestError as error:
        actual, golden = str(error) + "\n", folder / "expected_errors.txt"
    else:
        actual = json.dumps(describe(specs), indent=2, sort_keys=True) + "\n"
        golden = folder / "expected.json"
    if UPDATE:
        for name in GOLDEN:
            (folder / name).unlink(missing_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"{scenario}: loading gave {golden.name}:\n{actual}"
    assert actual == golden.read_text()


def test_databricks_body_keeps_its_meaning(tmp_path: Path) -> None:
    """The Databricks create-endpoint body: entities, 80/20 split, tags, raw extras."""
    (spec,) = load(copy_project("databricks-body-json", tmp_path))
    assert spec.name == "ads-serving-endpoint"
    assert [e.model_uri for e in spec.entities] == ["models:/ads-model/2", "models:/ads-model/4"]
    assert spec.routes == (Route("current", 80), Route("challenger", 20))
    assert spec.entity("challenger").replica_count == 2  # Medium
    assert spec.entity("challenger").environment_vars["FEATURE_STORE_TOKEN"] == (
        "{{secrets/ads_scope/feature_token}}"
    )
    assert spec.tags == {"team": "ads", "cost-center": "1234"}
    assert spec.extra["auto_capture_config"]["table_name_prefix"] == "ads_serving"
    assert spec.extra["entity_settings"]["challenger"]["instance_profile_arn"].startswith("arn:")
    assert spec.provider == "local"


def test_json_body_is_valid_without_a_file() -> None:
    body = json.loads((TESTDATA / "databricks-body-json" / "ads.json").read_text())
    spec = validate_document(body, "request body")
    assert spec.routes[0] == Route("current", 80)


def test_legacy_served_models_map_to_entities(tmp_path: Path) -> None:
    (spec,) = load(copy_project("served-models-legacy", tmp_path))
    first, second = spec.entities
    assert (first.name, first.model_uri, first.entity_version) == (
        "churn-classifier-3",
        "models:/churn-classifier/3",
        "3",
    )
    assert second.replica_count == 4  # Large
    assert spec.routes == (Route("churn-classifier-3", 90), Route("churn-next", 10))


def test_alias_uri_names_entity_and_routes_everything(tmp_path: Path) -> None:
    (spec,) = load(copy_project("model-uri-alias", tmp_path))
    (entity,) = spec.entities
    assert entity.name == "iris-champion"
    assert entity.model_uri == "models:/iris@champion"
    assert entity.replica_count == 3
    assert spec.routes == (Route("iris-champion", 100),)
    assert spec.rollout == RolloutPolicy(strategy="canary", steps=(10, 50, 100), bake_seconds=30)
    assert "rollout" not in spec.extra


def test_many_errors_are_all_reported_with_line_and_field(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load(copy_project("many-errors", tmp_path))
    problems = caught.value.problems
    assert len(problems) >= 15
    assert all(p.location.file == "broken.yaml" and p.location.line > 0 for p in problems)
    assert all(p.location.field for p in problems)
    lines = [p.location.line for p in problems]
    assert lines == sorted(lines)
    text = str(caught.value)
    assert (
        "broken.yaml:26: config.traffic_config.routes[0].traffic_percentage: must be an "
        'integer from 0 to 100, got "50%"'
    ) in text


def test_duplicate_endpoint_names_both_places(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load(copy_project("duplicate-endpoint", tmp_path))
    (problem,) = caught.value.problems
    assert str(problem).startswith(
        "b.yaml:8: name: endpoint 'fraud' is already defined at a.yaml:1"
    )


def test_even_split_gives_the_remainder_to_the_first() -> None:
    assert even_split(["a", "b", "c"]) == (Route("a", 34), Route("b", 33), Route("c", 33))
    assert sum(r.traffic_percentage for r in even_split([str(i) for i in range(7)])) == 100


def test_unrouted_entity_gets_zero_percent() -> None:
    body = {
        "name": "e",
        "config": {
            "served_entities": [
                {"name": "a", "entity_name": "m", "entity_version": "1"},
                {"name": "b", "entity_name": "m", "entity_version": "2"},
            ],
            "traffic_config": {"routes": [{"served_entity_name": "a", "traffic_percentage": 100}]},
        },
    }
    assert validate_document(body).routes == (Route("a", 100), Route("b", 0))


@pytest.mark.parametrize(
    ("entity", "message"),
    [
        ({"entity_name": "m"}, "entity_version: is required with entity_name"),
        ({}, "entity_name: is required (or model_uri)"),
        ({"model_uri": "models:/m"}, "must be models:/<name>/<version>"),
        ({"model_uri": "runs:/abc"}, "must be runs:/<run_id>/<artifact path>"),
        ({"model_uri": "/srv/model"}, "name: is required when model_uri is a runs:/ URI"),
        ({"external_model": {}}, "external models are not served by declare"),
        ({"entity_name": "m", "entity_version": "1", "replicas": 0}, "from 1 to 16, got 0"),
    ],
)
def test_entity_problems_say_what_is_allowed(entity: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        validate_document({"name": "e", "config": {"served_entities": [entity]}})
    assert message in str(caught.value)


def test_both_entity_forms_are_refused() -> None:
    entity = {"entity_name": "m", "entity_version": "1"}
    body = {"name": "e", "config": {"served_entities": [entity], "served_models": [entity]}}
    with pytest.raises(ManifestError, match="not both"):
        validate_document(body)


def test_discovery_skips_hidden_config_and_excluded(tmp_path: Path) -> None:
    project = copy_project("project-include-exclude", tmp_path)
    config = load_config(project, {})
    names = [
        p.name
        for p in discover_manifest_files(project, config.manifest_include, config.manifest_exclude)
    ]
    assert names == ["shop.yaml"]


def test_loading_takes_the_settings_as_plain_values(tmp_path: Path) -> None:
    project = copy_project("project-include-exclude", tmp_path)
    (project / "declare.yaml").unlink()  # the arguments are the loader's only settings
    specs = load_project_manifests(
        project,
        include=("*.yaml", "*.json"),
        exclude=("*.draft.yaml", "input_example.json"),
        default_provider="docker",
    )
    assert [(s.name, s.provider, str(s.location)) for s in specs] == [
        ("shop", "docker", "shop.yaml:1")
    ]
    defaults = load_project_manifests(project, include=("shop.yaml",))
    assert [(s.name, s.provider) for s in defaults] == [("shop", "local")]


def test_endpoint_schema_is_draft_2020_12_with_id() -> None:
    schema = load_schema("endpoint.schema.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("endpoint.schema.json")
    assert schema["properties"]["config"]["description"]
