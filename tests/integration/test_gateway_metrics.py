"""The gateway's metrics, scraped for real: GET /metrics (Prometheus' text format, read back
with prometheus_client's own parser) and the Databricks SDK's `export_metrics` against a real
gateway process in front of a real echo upstream on 127.0.0.1.

What a user would see: every answer counted by endpoint, served entity and HTTP status (a
replica's 422 as an error of its entity, a bad body and a 429 of the endpoint only), the
latency histogram, the replicas in rotation; the endpoint's own export under Databricks'
names; both behind the gateway's bearer token; an unknown endpoint a JSON 404.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound
from prometheus_client.parser import text_string_to_metric_families

from declare import procs
from declare.gateway.echo import spawn_echo
from declare.gateway.process import start_gateway, stop_gateway
from declare.gateway.table import RoutingTable

pytestmark = pytest.mark.integration

TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, as Prometheus would scrape them."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def at(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state_dir: Path = tmp_path_factory.mktemp("state")
    echo_port = procs.free_port()
    echo: subprocess.Popen[bytes] = spawn_echo(echo_port, "e1")
    try:
        port = procs.free_port(exclude=frozenset({echo_port}))
        record = start_gateway(state_dir, "127.0.0.1", port, auth_token=TOKEN)
        upstream = f"http://127.0.0.1:{echo_port}"

        def ep(**extra: Any) -> dict[str, Any]:
            return {
                "routes": [{"served_entity_name": "m-1", "traffic_percentage": 100}],
                "entities": {"m-1": {"replicas": [{"id": "m-1-a", "url": upstream}]}},
                **extra,
            }

        limit = {"calls": 2, "key": "endpoint", "renewal_period": "minute"}
        table = {"version": 3, "endpoints": {"iris": ep(), "limited": ep(rate_limits=[limit])}}
        record.client().put_table(RoutingTable.from_json(table))
        yield record.base_url
    finally:
        stop_gateway(state_dir, grace_seconds=5)
        echo.terminate()
        echo.wait(timeout=10)


def send(url: str, limited: bool = True) -> None:
    with httpx.Client(base_url=url, headers=AUTH, timeout=30.0, trust_env=False) as http:
        path = "/serving-endpoints/{}/invocations"
        for i in range(5):
            assert http.post(path.format("iris"), json={"inputs": [i]}).status_code == 200
        for _ in range(2):
            bad = http.post(path.format("iris"), json={"inputs": [1], "echo_status": 422})
            assert bad.status_code == 422
        not_json = http.post(
            path.format("iris"), content=b"{", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400
        if limited:  # 2 calls a minute: once per module
            answers = [http.post(path.format("limited"), json={"inputs": [1]}).status_code
                       for _ in range(3)]  # fmt: skip
            assert answers == [200, 200, 429]


def test_metrics_count_what_the_gateway_answered(gateway: str) -> None:
    send(gateway)
    response = httpx.get(f"{gateway}/metrics", headers=AUTH, trust_env=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    iris = {"endpoint_name": "iris", "served_entity_name": "m-1"}
    assert at(found, "declare_requests_total", **iris, code="200") == 5
    assert at(found, "declare_requests_total", **iris, code="422") == 2
    assert at(found, "declare_request_errors_total", **iris) == 2
    refused = {"endpoint_name": "iris", "served_entity_name": ""}
    assert at(found, "declare_requests_total", **refused, code="400") == 1
    limited = {"endpoint_name": "limited", "served_entity_name": ""}
    assert at(found, "declare_requests_total", **limited, code="429") == 1
    assert at(found, "declare_request_latency_ms_count", **iris) == 7
    assert at(found, "declare_request_latency_ms_bucket", **iris, le="+Inf") == 7
    assert at(found, "declare_request_latency_ms_sum", **iris) > 0
    assert at(found, "declare_replicas_in_rotation", **iris) == 1
    assert at(found, "declare_requests_in_flight", **iris) == 0
    assert at(found, "declare_routing_table_version") == 3
    assert at(found, "declare_capture_dropped_total") == 0  # nothing captures here
    assert at(found, "declare_capture_buffered") == 0

    # the bearer token guards metrics like everything else public
    assert httpx.get(f"{gateway}/metrics", trust_env=False).status_code == 401


def test_export_metrics_through_the_databricks_sdk(gateway: str) -> None:
    send(gateway, limited=False)
    client = WorkspaceClient(host=gateway, token=TOKEN, auth_type="pat")
    text = client.serving_endpoints.export_metrics("iris").contents.read().decode()  # type: ignore[union-attr]
    found = samples(text)
    m1 = {"served_entity_name": "m-1"}
    assert at(found, "request_count_total", **m1) >= 7
    assert at(found, "request_4xx_count_total", **m1) >= 2
    assert at(found, "request_5xx_count_total", **m1) == 0
    assert at(found, "request_latency_ms_count", **m1) == at(found, "request_count_total", **m1)
    assert at(found, "request_4xx_count_total", served_entity_name="") >= 1  # the bad body
    with pytest.raises(NotFound):
        client.serving_endpoints.export_metrics("nope")
