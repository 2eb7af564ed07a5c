"""Inference tables, the pure parts: where a manifest's capture settings put the table,
the rows built from captured requests, the routing table carrying capture, and the plan
that a change of capture settings makes."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from declare.diff import Change, diff
from declare.errors import ManifestError
from declare.gateway.capture.buffer import CaptureBuffer, Captured
from declare.gateway.capture.rows import SCHEMA, build_rows
from declare.gateway.table import RoutingTable
from declare.manifests import validate_document
from declare.model import CaptureTarget
from declare.routing import routes_as_expected, routing_table
from tests.unit.planning_fixtures import applied, desired, plan_of


def body(**config: Any) -> dict[str, Any]:
    return {
        "name": "iris",
        "config": {
            "served_entities": [{"name": "iris-1", "entity_name": "iris", "entity_version": "1"}],
            **config,
        },
    }


def test_auto_capture_config_maps_to_a_folder_below_the_capture_root() -> None:
    spec = validate_document(
        body(
            auto_capture_config={
                "catalog_name": "ml",
                "schema_name": "serving",
                "table_name_prefix": "iris_prod",
                "enabled": True,
            }
        ),
        "iris.json",
    )
    target = spec.capture
    assert target == CaptureTarget("ml", "serving", "iris_prod")
    assert target.table_name == "ml.serving.iris_prod_payload"
    assert target.path(Path("/srv/capture")) == Path("/srv/capture/ml/serving/iris_prod_payload")


def test_missing_names_take_unity_catalogs_defaults_and_the_endpoint_name() -> None:
    spec = validate_document(body(auto_capture_config={"enabled": True}), "iris.json")
    assert spec.capture is not None
    assert spec.capture.relative_path == "main/default/iris_payload"


def test_ai_gateway_inference_table_config_turns_capture_on_too() -> None:
    manifest = body()
    manifest["ai_gateway"] = {
        "inference_table_config": {"catalog_name": "gw", "schema_name": "logs", "enabled": True}
    }
    spec = validate_document(manifest, "iris.json")
    assert spec.capture == CaptureTarget("gw", "logs", "iris")


def test_capture_is_off_unless_enabled() -> None:
    off = validate_document(
        body(auto_capture_config={"catalog_name": "ml", "enabled": False}), "iris.json"
    )
    assert off.capture is None
    assert validate_document(body(), "iris.json").capture is None


def test_a_name_that_would_leave_the_capture_root_is_refused_with_its_field() -> None:
    with pytest.raises(ManifestError) as exc:
        validate_document(
            body(auto_capture_config={"catalog_name": "../etc", "enabled": True}), "iris.json"
        )
    assert "auto_capture_config.catalog_name" in str(exc.value)


def captured(
    request: bytes = b'{"inputs": [[1]]}', response: bytes = b'{"predictions": [0]}', **kw: Any
) -> Captured:
    values: dict[str, Any] = {
        "target": CaptureTarget("main", "default", "iris"),
        "endpoint": "iris",
        "served_entity": "iris-1",
        "model_name": "iris",
        "model_version": "3",
        "timestamp_ms": 1_767_225_600_123,  # 2026-01-01T00:00:00.123Z
        "status_code": 200,
        "execution_time_ms": 7,
        "request": request,
        "response": response,
        "requester": "anonymous",
    }
    values.update(kw)
    return Captured(**values)


def test_rows_have_databricks_columns_and_values() -> None:
    table = build_rows(
        [
            captured(request=b'{"client_request_id": "abc", "inputs": [[1]]}'),
            captured(status_code=429, served_entity=None, model_name=None, model_version=None),
        ]
    )
    assert table.schema == SCHEMA
    first, second = table.to_pylist()
    assert first["client_request_id"] == "abc"
    assert first["date"] == dt.date(2026, 1, 1)
    assert first["timestamp_ms"] == 1_767_225_600_123
    assert (first["status_code"], first["execution_time_ms"], first["sampling_fraction"]) == (
        200,
        7,
        1.0,
    )
    assert json.loads(first["request"])["inputs"] == [[1]]
    assert json.loads(first["response"]) == {"predictions": [0]}
    assert dict(first["request_metadata"]) == {
        "endpoint_name": "iris",
        "served_entity_name": "iris-1",
        "model_name": "iris",
        "model_version": "3",
        "requester": "anonymous",
    }
    assert first["logging_error_codes"] == []
    assert first["databricks_request_id"] != second["databricks_request_id"]
    assert second["status_code"] == 429
    assert dict(second["request_metadata"]) == {"endpoint_name": "iris", "requester": "anonymous"}


def test_a_payload_over_the_limit_is_stored_truncated_and_flagged() -> None:
    big = b'{"inputs": "' + "é".encode() * 100 + b'"}'
    (row,) = build_rows(
        [captured(request=big, response=b"x" * 50)], max_payload_bytes=41
    ).to_pylist()
    assert len(row["request"].encode()) <= 41  # the "é" cut in two is left out
    assert big.decode().startswith(row["request"])
    assert row["response"] == "x" * 41
    assert row["logging_error_codes"] == ["MAX_REQUEST_SIZE_EXCEEDED", "MAX_RESPONSE_SIZE_EXCEEDED"]


def test_a_full_buffer_drops_and_counts_instead_of_waiting() -> None:
    buffer = CaptureBuffer(capacity=3, flush_records=2)
    accepted = [buffer.offer(captured()) for _ in range(5)]
    assert accepted == [True, True, True, False, False]
    assert buffer.wake.is_set()  # the writer is woken once a batch is ready
    stats = buffer.stats()
    assert (stats["captured"], stats["dropped"], stats["buffered"]) == (3, 2, 3)
    assert len(buffer.take()) == 3
    assert buffer.offer(captured())


def capturing(on: bool = True, **names: str) -> Any:
    d = desired(("1", 100))
    extra = {"auto_capture_config": {"enabled": on, **names}}
    return replace(d, spec=replace(d.spec, extra=extra))


def test_routing_table_carries_capture_and_the_model_of_each_entity() -> None:
    state, _ = applied(capturing(catalog_name="ml"))
    table = RoutingTable.from_json(json.loads(json.dumps(routing_table(state, 7).to_json())))
    entry = table.endpoints["iris"]
    assert entry.capture == CaptureTarget("ml", "default", "iris")
    assert entry.models["iris-1"].version == "1"
    assert routes_as_expected(state.endpoints["iris"], entry)
    assert not routes_as_expected(state.endpoints["iris"], replace(entry, capture=None))


def test_enabling_capture_is_a_plan_change_that_pushes_routes() -> None:
    state, actual = applied(desired(("1", 100)))
    (change,) = diff([capturing()], state, actual, "gw")
    assert change.kind is Change.UPDATE
    assert change.route_push
    assert [f.path for f in change.fields] == ["auto_capture_config"]
    assert not change.starts and not change.stops  # no replica restarts for it
    plan = plan_of([change])
    assert any(a.id == "endpoint.iris.routes" for a in plan.actions)


def test_a_gateway_routing_without_the_recorded_capture_is_drift() -> None:
    d = capturing()
    state, actual = applied(d)
    stale = routing_table(state, 1)
    stale_entry = replace(stale.endpoints["iris"], capture=None)
    actual = replace(actual, gateway_table=replace(stale, endpoints={"iris": stale_entry}))
    (change,) = diff([d], state, actual, "gw")
    assert change.route_push
    assert "the gateway does not route iris as recorded" in change.drift


def test_declare_yaml_sets_the_capture_root_and_a_change_restarts_the_gateway(
    tmp_path: Path,
) -> None:
    from declare.config import load_config
    from declare.ports import GatewaySettings

    assert load_config(tmp_path, {}).capture_root is None  # then <state>/capture
    (tmp_path / "declare.yaml").write_text("capture:\n  root: tables\n  max_payload_bytes: 4096\n")
    config = load_config(tmp_path, {})
    assert config.capture_root == tmp_path.resolve() / "tables"
    assert config.capture_max_payload_bytes == 4096
    default = GatewaySettings("127.0.0.1", 8787)
    assert GatewaySettings("127.0.0.1", 8787, capture_root=None).hash == default.hash
    assert GatewaySettings("127.0.0.1", 8787, capture_root=config.capture_root).hash != default.hash


def test_a_bad_capture_setting_in_declare_yaml_names_its_line_and_field(tmp_path: Path) -> None:
    from declare.config import load_config

    (tmp_path / "declare.yaml").write_text("capture:\n  max_payload_bytes: 0\n")
    with pytest.raises(ManifestError) as exc:
        load_config(tmp_path, {})
    assert "declare.yaml:2" in str(exc.value) and "capture.max_payload_bytes" in str(exc.value)


def test_status_names_the_inference_table_and_the_dropped_records() -> None:
    from declare.views.status import status_json, status_lines

    state, actual = applied(capturing(catalog_name="ml"))
    counters = {"captured": 10, "dropped": 3, "written": 10, "failed": 0, "buffered": 0}
    report = status_json(
        state, actual, lambda n: f"http://gw/{n}", None, None, Path("/srv/capture"), counters
    )
    (endpoint,) = report["endpoints"]
    assert endpoint["declare"]["inference_table"] == {
        "name": "ml.default.iris_payload",
        "path": "/srv/capture/ml/default/iris_payload",
    }
    assert report["capture"]["dropped"] == 3
    lines = status_lines(report, "127.0.0.1", 8787)
    assert "capture: 3 requests dropped (the capture buffer was full), 10 written" in lines
    assert (
        "  inference table ml.default.iris_payload: /srv/capture/ml/default/iris_payload" in lines
    )


def test_a_failed_write_is_counted_and_the_next_batch_still_written(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from declare.gateway.capture import CaptureWriter

    blocked = tmp_path / "capture"
    blocked.write_text("a file where the tables' folder should be")
    buffer = CaptureBuffer(capacity=10, flush_records=10)
    writer = CaptureWriter(buffer, blocked)
    buffer.offer(captured())
    buffer.offer(captured())
    writer.flush()  # on the caller's thread: the same work the writer thread does
    assert (buffer.failed, buffer.written, len(buffer)) == (2, 0, 0)
    blocked.unlink()
    buffer.offer(captured(request=b'{"inputs": [[2]]}'))
    writer.flush()
    assert (buffer.failed, buffer.written) == (2, 1)
    table = DeltaTable(str(blocked / "main" / "default" / "iris_payload"))
    assert [json.loads(r)["inputs"] for r in table.to_pyarrow_table()["request"].to_pylist()] == [
        [[2]]
    ]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--capture-buffer", "0"),
        ("--capture-flush-seconds", "0"),
        ("--capture-max-payload-bytes", "-1"),
    ],
)
def test_the_gateway_refuses_capture_settings_that_cannot_work(
    tmp_path: Path, option: str, value: str
) -> None:
    from declare.gateway.__main__ import StartupError, make_config, parse_args

    token = tmp_path / "admin-token"
    token.write_text("secret")
    token.chmod(0o600)
    args = parse_args(["--port", "1", "--admin-token-file", str(token), option, value])
    with pytest.raises(StartupError) as exc:
        make_config(args)
    assert option in str(exc.value)
