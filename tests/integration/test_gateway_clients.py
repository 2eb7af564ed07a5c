"""Real clients against a real gateway process: MLflow's Databricks deployment client and
the Databricks SDK read endpoints and get one clear, immediate refusal for every change
(declare manages the endpoints: change the manifest and apply), never a bare 404/405 or a
client retrying for minutes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, PermissionDenied
from requests import HTTPError

from tests.integration.test_gateway_metrics import TOKEN, gateway  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def bounded(call: Callable[[], Any], seconds: float = 30.0) -> Any:
    """`call()`'s result or exception, failing the test when it is still running after
    `seconds` (a client retrying a refusal)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = call()
        except Exception as exc:  # handed back to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds:g} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_mlflow_deployment_client(gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from mlflow.deployments import get_deploy_client

    monkeypatch.setenv("DATABRICKS_HOST", gateway)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    client = get_deploy_client("databricks")
    names = [e["name"] for e in bounded(client.list_endpoints)]  # GET .../serving-endpoints/
    assert names == ["iris", "limited"]
    assert bounded(lambda: client.get_endpoint("iris"))["name"] == "iris"
    for change in (
        lambda: client.create_endpoint(name="x", config={"served_entities": []}),
        lambda: client.update_endpoint_config(endpoint="iris", config={"served_entities": []}),
        lambda: client.delete_endpoint("iris"),
    ):
        with pytest.raises(HTTPError) as refused:
            bounded(change)
        assert refused.value.response.status_code == 403
        assert "managed by declare" in refused.value.response.json()["message"]


def test_databricks_sdk(gateway: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    client = WorkspaceClient(host=gateway, token=TOKEN, auth_type="pat")
    assert "host metadata" not in caplog.text  # the SDK's probe is answered, not warned about
    assert sorted(e.name or "" for e in client.serving_endpoints.list()) == ["iris", "limited"]
    assert client.serving_endpoints.get("iris").name == "iris"
    for change in (
        lambda: client.serving_endpoints.create(name="x"),
        lambda: client.serving_endpoints.update_config("iris"),
        lambda: client.serving_endpoints.put("iris"),
        lambda: client.serving_endpoints.patch("iris"),
        lambda: client.serving_endpoints.delete("iris"),
    ):
        with pytest.raises(PermissionDenied, match="managed by declare"):
            bounded(change)
    with pytest.raises(NotFound):
        bounded(lambda: client.serving_endpoints.delete("no-such-endpoint"))
