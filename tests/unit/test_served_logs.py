"""A served model's logs over the gateway's REST API, without a provider: Docker's log frames
decoded as the engine sends them (in any chunks), where logs are carried in the routing table
(and read back from its JSON), and the gateway's answers for a file, a Docker-like engine on
a unix socket, a table pushed before logs were carried, and what is not there."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from declare.gateway.config import GatewayConfig
from declare.gateway.logread import Demultiplexer, demultiplex, file_tail, last_lines
from declare.gateway.served_logs import TAIL_LINES
from declare.gateway.server import Gateway
from declare.gateway.table import RoutingTable
from declare.model import BuildLog, LogSource, ReplicaHandle
from declare.routing import routes_as_expected, routing_table
from declare.state.document import State
from tests.unit.planning_fixtures import applied, desired


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


STREAM = frame(1, b"Uvicorn running\n") + frame(2, b"warning: slow\n") + frame(1, b"done\n")


# -- Docker's multiplexed stream -------------------------------------------------------------


def test_frames_from_stdout_and_stderr_become_the_lines_in_order() -> None:
    assert demultiplex(STREAM) == b"Uvicorn running\nwarning: slow\ndone\n"


def test_any_chunking_of_the_stream_gives_the_same_lines() -> None:
    for size in (1, 3, 7, 8, 9, 64):
        stream = Demultiplexer(keep=1024)
        for at in range(0, len(STREAM), size):
            stream.feed(STREAM[at : at + size])
        assert stream.finish() == b"Uvicorn running\nwarning: slow\ndone\n", size


def test_a_tty_containers_raw_stream_is_kept_as_it_is() -> None:
    assert demultiplex(b"plain output\nmore\n") == b"plain output\nmore\n"
    assert demultiplex(b"hi\n") == b"hi\n"  # shorter than a header


def test_a_cut_last_frame_gives_what_it_holds_and_garbage_after_a_frame_is_dropped() -> None:
    assert demultiplex(STREAM[:-3]) == b"Uvicorn running\nwarning: slow\ndo"
    assert demultiplex(frame(1, b"ok\n") + b"\x07garbage-not-a-header") == b"ok\n"


def test_a_long_stream_keeps_only_its_tail() -> None:
    stream = Demultiplexer(keep=100)
    for i in range(1000):
        stream.feed(frame(1, f"line {i}\n".encode()))
    kept = stream.finish()
    assert len(kept) == 100 and kept.endswith(b"line 999\n")
    assert last_lines(kept, 3, 99).splitlines() == ["line 997", "line 998", "line 999"]


def test_a_files_tail_is_bounded_in_lines_and_bytes(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert file_tail(log, 2, 1024).splitlines() == ["line 9998", "line 9999"]
    cut = file_tail(log, 10_000, 1024)
    assert len(cut.encode()) <= 1024 and cut.splitlines()[0].startswith("line ")
    assert cut.splitlines()[-1] == "line 9999"


# -- the table and the state carry where logs are ---------------------------------------------


def table_json(replica_logs: dict[str, Any] | None, build: dict[str, str] | None) -> dict[str, Any]:
    replica: dict[str, Any] = {"id": "iris-iris-1-aaaaaa", "url": "http://127.0.0.1:1"}
    if replica_logs is not None:
        replica["logs"] = replica_logs
    entity: dict[str, Any] = {"replicas": [replica]}
    if build is not None:
        entity["build_log"] = build
    return {
        "version": 1,
        "endpoints": {
            "iris": {
                "routes": [{"served_entity_name": "iris-1", "traffic_percentage": 100}],
                "entities": {"iris-1": entity},
                "description": {
                    "name": "iris",
                    "config": {"served_entities": [{"name": "iris-1"}, {"name": "iris-2"}]},
                },
            }
        },
    }


def test_the_tables_json_round_trips_log_sources_and_build_logs() -> None:
    docker = {"engine": "unix:///run/engine.sock", "container": "c0ffee"}
    data = table_json(docker, {"file": "/state/docker/builds/k.log"})
    table = RoutingTable.from_json(data)
    ep = table.endpoints["iris"]
    (replica,) = ep.entities["iris-1"]
    assert replica.logs == LogSource(engine="unix:///run/engine.sock", container="c0ffee")
    assert ep.build_logs["iris-1"] == BuildLog(file="/state/docker/builds/k.log")
    assert RoutingTable.from_json(table.to_json()).to_json() == table.to_json()
    assert table.to_json()["endpoints"]["iris"]["entities"] == data["endpoints"]["iris"]["entities"]


def test_an_older_table_without_logs_still_reads_and_writes_without_them() -> None:
    table = RoutingTable.from_json(table_json(None, None))
    ep = table.endpoints["iris"]
    assert ep.entities["iris-1"][0].logs is None and ep.build_logs == {}
    assert "logs" not in table.to_json()["endpoints"]["iris"]["entities"]["iris-1"]["replicas"][0]


def test_a_malformed_log_source_is_refused_naming_the_entity() -> None:
    with pytest.raises(ValueError, match=r"endpoints\.iris\.entities\.iris-1 is malformed"):
        RoutingTable.from_json(table_json({"file": 7}, None))


def test_a_handle_keeps_its_log_source_through_the_state_json() -> None:
    logs = LogSource(file="/s/local/logs/r.log", build=BuildLog(text="nothing was built"))
    handle = ReplicaHandle("r", "local", "iris", "iris-1", "g", "http://h:1", {}, logs)
    assert ReplicaHandle.from_json(handle.to_json()) == handle
    old = {k: v for k, v in handle.to_json().items() if k != "logs"}
    assert ReplicaHandle.from_json(old).logs is None


def test_the_routing_table_carries_the_handles_log_sources_and_drift_ignores_them() -> None:
    state, _ = applied(desired(("1", 100)))
    record = state.endpoints["iris"]
    logs = LogSource(file="/s/local/logs/r.log", build=BuildLog(text="nothing was built"))
    with_logs = replace(
        record,
        replicas=tuple(replace(r, handle=replace(r.handle, logs=logs)) for r in record.replicas),
    )
    table = routing_table(State(serial=3, lineage="l", endpoints={"iris": with_logs}), 2)
    ep = RoutingTable.from_json(table.to_json()).endpoints["iris"]
    assert {r.logs for r in ep.entities["iris-1"]} == {logs}
    assert ep.build_logs == {"iris-1": BuildLog(text="nothing was built")}
    # A gateway still routing from a table pushed without them is not drift, nor the reverse.
    old = routing_table(state, 1).endpoints["iris"]
    assert routes_as_expected(with_logs, old)
    assert routes_as_expected(record, ep)


# -- the gateway's answers ---------------------------------------------------------------------


def ask(data: dict[str, Any], *paths: str) -> list[tuple[int, dict[str, Any]]]:
    """GET each path of a real gateway application holding the table `data`."""

    async def run() -> list[tuple[int, dict[str, Any]]]:
        gateway = Gateway(GatewayConfig(admin_token="a"))
        gateway.set_table(RoutingTable.from_json(data))
        async with TestClient(TestServer(gateway.make_app())) as client:
            out = []
            for path in paths:
                response = await client.get(path)
                out.append((response.status, await response.json()))
            return out

    return asyncio.run(run())


LOGS = "/api/2.0/serving-endpoints/iris/served-models/{}/logs"
BUILD = "/api/2.0/serving-endpoints/iris/served-models/{}/build-logs"


def test_a_replicas_log_file_is_served_under_its_header(tmp_path: Path) -> None:
    log = tmp_path / "iris-iris-1-aaaaaa.log"
    log.write_text("".join(f"line {i}\n" for i in range(TAIL_LINES + 50)))
    build = {"text": "nothing was built for this served model"}
    (status, body), (b_status, b_body) = ask(
        table_json({"file": str(log)}, build), LOGS.format("iris-1"), BUILD.format("iris-1")
    )
    assert status == 200
    lines = body["logs"].splitlines()
    assert lines[0] == "==> iris-iris-1-aaaaaa (iris-1) <=="
    assert lines[1:] == [f"line {i}" for i in range(50, TAIL_LINES + 50)]
    assert (b_status, b_body) == (200, {"logs": "nothing was built for this served model"})


def test_a_build_log_file_is_served_and_a_missing_one_is_explained(tmp_path: Path) -> None:
    kept = tmp_path / "k.log"
    kept.write_text("== build declare-env:k from base\n== built declare-env:k in 20.0s\n")
    ((status, body),) = ask(table_json(None, {"file": str(kept)}), BUILD.format("iris-1"))
    assert status == 200 and body["logs"].endswith("== built declare-env:k in 20.0s")
    missing = {"file": str(tmp_path / "none.log")}
    ((status, body),) = ask(table_json(None, missing), BUILD.format("iris-1"))
    assert status == 200 and "no build log of this environment is kept" in body["logs"]


def test_a_table_pushed_before_logs_were_carried_points_at_declare_logs() -> None:
    (_, logs), (_, build) = ask(
        table_json(None, None), LOGS.format("iris-1"), BUILD.format("iris-1")
    )
    assert "`declare logs iris iris-1` shows it" in logs["logs"]
    assert "names no build log" in build["logs"]


def test_a_served_model_without_replicas_and_unknown_names(tmp_path: Path) -> None:
    answers = ask(
        table_json(None, None),
        LOGS.format("iris-2"),  # in the description, not routed: no replica runs
        LOGS.format("nope-1"),
        "/api/2.0/serving-endpoints/nope/served-models/iris-1/logs",
    )
    assert answers[0][0] == 200 and "no replica of 'iris-2' runs now" in answers[0][1]["logs"]
    assert answers[1] == (
        404,
        {
            "error_code": "RESOURCE_DOES_NOT_EXIST",
            "message": "served model 'nope-1' does not exist in serving endpoint 'iris'; "
            "served models: iris-1, iris-2",
        },
    )
    assert answers[2][0] == 404 and "'nope'" in answers[2][1]["message"]


def test_a_containers_log_is_asked_of_the_engine_over_its_unix_socket(tmp_path: Path) -> None:
    """A Docker-API-shaped server on a unix socket: the gateway asks it for the container's
    tail, with stdout and stderr, and shows the decoded lines; a gone container and an
    engine that does not answer are said in the text, not as a failed request."""
    socket = tmp_path / "engine.sock"
    asked: list[dict[str, str]] = []

    async def container_logs(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        if request.match_info["id"] != "c0ffee":
            return web.json_response({"message": "No such container"}, status=404)
        return web.Response(body=STREAM, content_type="application/vnd.docker.raw-stream")

    async def run() -> list[dict[str, Any]]:
        app = web.Application()
        app.router.add_get("/containers/{id}/logs", container_logs)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, str(socket)).start()
        try:
            gateway = Gateway(GatewayConfig(admin_token="a"))
            out = []
            async with TestClient(TestServer(gateway.make_app())) as client:
                for source in (
                    {"engine": f"unix://{socket}", "container": "c0ffee"},
                    {"engine": f"unix://{socket}", "container": "gone"},
                    {"engine": f"unix://{tmp_path}/nothing.sock", "container": "c0ffee"},
                    {"engine": "ssh://user@host", "container": "c0ffee"},
                ):
                    gateway.set_table(RoutingTable.from_json(table_json(source, None)))
                    out.append(await (await client.get(LOGS.format("iris-1"))).json())
            return out
        finally:
            await runner.cleanup()

    found, gone, down, ssh = (body["logs"] for body in asyncio.run(run()))
    assert found == "==> iris-iris-1-aaaaaa (iris-1) <==\nUvicorn running\nwarning: slow\ndone"
    assert asked[0] == {"stdout": "1", "stderr": "1", "tail": str(TAIL_LINES)}
    assert "container gone no longer exists on the engine" in gone
    assert "does not answer" in down and "`declare logs iris iris-1`" in down
    assert "unix socket or plain TCP" in ssh


def test_an_engine_reached_over_tls_is_named_so_and_not_asked_in_plain_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from providers.docker.engine import Engine

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    engine = Engine(None).api_url
    assert engine == "https://127.0.0.1:2376"
    ((_, body),) = ask(
        table_json({"engine": engine, "container": "c"}, None), LOGS.format("iris-1")
    )
    assert "unix socket or plain TCP, and the engine is https://" in body["logs"]
