"""The real gateway process in front of real echo upstreams on loopback.

One gateway (with end-user auth on) and three echo upstreams serve the whole module; each
test pushes its own routing table. Echo upstreams return body and Content-Type unchanged,
so what a client gets back shows exactly what the gateway forwarded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from declare import procs
from declare.errors import GatewayError
from declare.gateway.client import GatewayClient
from declare.gateway.echo import spawn_echo
from declare.gateway.process import GatewayRecord, start_gateway, stop_gateway
from declare.gateway.table import RoutingTable

pytestmark = pytest.mark.integration

TOKEN = "user-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MiB = 1024 * 1024


class Env:
    def __init__(self, record: GatewayRecord, echoes: dict[str, str]) -> None:
        self.record = record
        self.url = record.base_url
        self.echoes = echoes  # echo id -> base URL
        self.admin = record.client()
        self.http = httpx.Client(base_url=self.url, headers=AUTH, timeout=30.0, trust_env=False)

    def push(self, endpoints: dict[str, Any], version: int = 1) -> None:
        self.admin.put_table(RoutingTable.from_json({"version": version, "endpoints": endpoints}))

    def put_raw(self, table: Any) -> httpx.Response:
        """PUT a table as given, past the client's own validation (to see the gateway's)."""
        return httpx.put(
            f"{self.url}/_declare/admin/table",
            json=table,
            headers={"X-Declare-Admin-Token": self.record.admin_token()},
        )

    def invoke(self, endpoint: str, body: Any, **kw: Any) -> httpx.Response:
        if isinstance(body, bytes):
            return self.http.post(f"/serving-endpoints/{endpoint}/invocations", content=body, **kw)
        return self.http.post(f"/serving-endpoints/{endpoint}/invocations", json=body, **kw)

    def echo_count(self, ident: str) -> int:
        stats = httpx.get(f"{self.echoes[ident]}/_echo/stats", trust_env=False).json()
        return int(stats["invocations"])

    def echo_inflight(self, ident: str) -> int:
        stats = httpx.get(f"{self.echoes[ident]}/_echo/stats", trust_env=False).json()
        return int(stats["inflight"])


def ep(routes: dict[str, int], replicas: dict[str, list[tuple[str, str]]], **extra: Any) -> Any:
    return {
        "routes": [{"served_entity_name": n, "traffic_percentage": p} for n, p in routes.items()],
        "entities": {
            name: {"replicas": [{"id": rid, "url": url} for rid, url in reps]}
            for name, reps in replicas.items()
        },
        **extra,
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    state_dir: Path = tmp_path_factory.mktemp("state")
    used: set[int] = set()
    echo_procs: list[subprocess.Popen[bytes]] = []
    echoes: dict[str, str] = {}
    try:
        for ident in ("e1", "e2", "e3"):
            port = procs.free_port(exclude=frozenset(used))
            used.add(port)
            echo_procs.append(spawn_echo(port, ident))
            echoes[ident] = f"http://127.0.0.1:{port}"
        port = procs.free_port(exclude=frozenset(used))
        record = start_gateway(state_dir, "127.0.0.1", port, auth_token=TOKEN)
        environment = Env(record, echoes)
        yield environment
        # Whatever the tests sent, the process is still the same one and still answers.
        assert environment.admin.health() is not None
        assert environment.admin.health()["pid"] == record.process.pid  # type: ignore[index]
    finally:
        stop_gateway(state_dir, grace_seconds=5)
        for proc in echo_procs:
            proc.terminate()
            proc.wait(timeout=10)


def single(env: Env, echo: str = "e1", entity: str = "m-1") -> Any:
    return ep({entity: 100}, {entity: [(f"{entity}-{echo}", env.echoes[echo])]})


# -- pass-through --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5]]}}', "application/json"),
        (b'{"dataframe_records": [{"a": 1, "b": 2.5}]}', "application/json"),
        (b'{"instances": [[1, 2.5]]}', "application/json; charset=utf-8"),
        (b'{"inputs": {"a": [1], "b": [2.5]}, "params": {"k": 1}}', "application/json"),
        (b"a,b\n1,2.5\n3,4\n", "text/csv"),
    ],
)
def test_body_and_content_type_pass_through_unchanged(
    env: Env, body: bytes, content_type: str
) -> None:
    env.push({"iris": single(env)})
    response = env.invoke("iris", body, headers={"Content-Type": content_type})
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["content-type"] == content_type
    assert response.headers["served-model-name"] == "m-1"


def test_replica_status_passes_through(env: Env) -> None:
    env.push({"iris": single(env)})
    response = env.invoke("iris", {"inputs": [1], "echo_status": 422})
    assert response.status_code == 422
    assert response.json()["inputs"] == [1]


# -- auth ----------------------------------------------------------------------------------


def test_public_requests_need_the_bearer_token(env: Env) -> None:
    env.push({"iris": single(env)})
    url = f"{env.url}/serving-endpoints/iris/invocations"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.post(url, json={"inputs": [1]}, headers=headers, trust_env=False)
        assert response.status_code == 401
        assert response.json()["error_code"] == "UNAUTHENTICATED"
        listing = httpx.get(f"{env.url}/api/2.0/serving-endpoints", headers=headers)
        assert listing.status_code == 401
    assert httpx.get(f"{env.url}/_declare/health", trust_env=False).status_code == 200
    assert env.invoke("iris", {"inputs": [1]}).status_code == 200


def test_admin_interface_needs_the_admin_token(env: Env) -> None:
    env.push({"iris": single(env)}, version=5)
    table = {"version": 99, "endpoints": {}}
    for headers in ({}, {"X-Declare-Admin-Token": "guess"}, AUTH):
        put = httpx.put(f"{env.url}/_declare/admin/table", json=table, headers=headers)
        assert put.status_code == 403
        assert put.json()["error_code"] == "PERMISSION_DENIED"
        assert httpx.get(f"{env.url}/_declare/admin/metrics", headers=headers).status_code == 403
    assert env.admin.get_table().version == 5
    assert env.invoke("iris", {"inputs": [1]}).status_code == 200


# -- client errors -------------------------------------------------------------------------


def test_unknown_endpoint_is_404_naming_it(env: Env) -> None:
    env.push({"iris": single(env)})
    response = env.invoke("no-such-model", {"inputs": [1]})
    assert response.status_code == 404
    assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "no-such-model" in response.json()["message"]
    described = env.http.get("/api/2.0/serving-endpoints/no-such-model")
    assert described.status_code == 404 and "no-such-model" in described.json()["message"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"inputs": [1, 2', "not valid JSON"),
        (b"[[1, 2]]", "not an array"),
        (b'"inputs"', "not a string"),
        (b"", "empty"),
        (b'{"inputs": "\xff\xfe"}', "UTF-8"),
    ],
)
def test_bad_json_is_400_saying_what_is_wrong(env: Env, body: bytes, says: str) -> None:
    env.push({"iris": single(env)})
    before = env.echo_count("e1")
    response = env.invoke("iris", body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert says in response.json()["message"]
    assert env.echo_count("e1") == before  # never forwarded
    assert env.invoke("iris", {"inputs": [1]}).status_code == 200


def test_body_over_16_mib_is_413_and_at_the_limit_passes(env: Env) -> None:
    env.push({"iris": single(env)})
    prefix, suffix = b'{"inputs": "', b'"}'
    at_limit = prefix + b"x" * (16 * MiB - len(prefix) - len(suffix)) + suffix
    ok = env.invoke("iris", at_limit, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and len(ok.content) == 16 * MiB
    over = env.invoke("iris", at_limit + b" ", headers={"Content-Type": "application/json"})
    assert over.status_code == 413
    assert str(16 * MiB) in over.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while reading
        for _ in range(17):
            yield b"a" * MiB

    chunked = env.http.post(
        "/serving-endpoints/iris/invocations",
        content=chunks(),
        headers={"Content-Type": "text/csv"},
    )
    assert chunked.status_code == 413
    assert env.invoke("iris", {"inputs": [1]}).status_code == 200


def test_unsupported_content_type_is_415_and_wrong_method_405(env: Env) -> None:
    env.push({"iris": single(env)})
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = env.invoke("iris", b"a=1", headers={"Content-Type": content_type})
        assert response.status_code == 415
        assert content_type in response.json()["message"]
    wrong = env.http.get("/serving-endpoints/iris/invocations")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error_code"] == "BAD_REQUEST"


def test_gateway_survives_garbage_on_the_wire(env: Env) -> None:
    env.push({"iris": single(env)})
    for garbage in (
        b"\x00\xff\x13 NOT HTTP\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", env.record.port), timeout=5) as sock:
            sock.sendall(garbage)
            answer = sock.recv(1024)
            assert answer.split(b" ")[1] == b"400"
    assert env.invoke("iris", {"inputs": [1]}).status_code == 200


# -- availability --------------------------------------------------------------------------


def test_entity_without_ready_replica_is_503_with_retry_after(env: Env) -> None:
    env.push({"iris": ep({"m-1": 100}, {"m-1": []})})
    response = env.invoke("iris", {"inputs": [1]})
    assert response.status_code == 503
    assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "m-1" in response.json()["message"]
    assert int(response.headers["retry-after"]) >= 1
    described = env.http.get("/api/2.0/serving-endpoints/iris").json()
    assert described["state"]["ready"] == "NOT_READY"


def test_closed_replica_port_is_retried_on_another_replica(env: Env) -> None:
    dead = f"http://127.0.0.1:{procs.free_port()}"
    env.push({"iris": ep({"m-1": 100}, {"m-1": [("dead", dead), ("live", env.echoes["e2"])]})})
    since = time.time()
    responses = [env.invoke("iris", {"inputs": [i]}) for i in range(20)]
    assert [r.status_code for r in responses] == [200] * 20
    assert [r.json()["inputs"] for r in responses] == [[i] for i in range(20)]
    entity = env.admin.metrics(since)["endpoints"]["iris"]["entities"]["m-1"]
    assert entity["errors"] == 0
    assert entity["total_connection_failures"] >= 1

    # Another entity of the same endpoint takes the retry when the chosen one has no other.
    env.push({"iris": ep({"m-1": 100, "m-2": 0}, {"m-1": [("dead", dead)], "m-2": []})}, version=2)
    alone = env.invoke("iris", {"inputs": [1]})
    assert alone.status_code == 503
    assert "dead" in alone.json()["message"] and "retry-after" in alone.headers
    env.push(
        {
            "iris": ep(
                {"m-1": 50, "m-2": 50},
                {"m-1": [("dead", dead)], "m-2": [("live", env.echoes["e2"])]},
            )
        },
        version=3,
    )
    names = [env.invoke("iris", {"inputs": [1]}) for _ in range(10)]
    assert all(r.status_code == 200 for r in names)
    assert {r.headers["served-model-name"] for r in names} == {"m-2"}


# -- routing -------------------------------------------------------------------------------


def test_weighted_split_between_served_entities(env: Env) -> None:
    env.push(
        {
            "iris": ep(
                {"champion": 80, "challenger": 20},
                {
                    "champion": [("c-e1", env.echoes["e1"])],
                    "challenger": [("x-e2", env.echoes["e2"])],
                },
            )
        }
    )
    n = 1000
    names = Counter(
        env.invoke("iris", {"inputs": [1]}).headers["served-model-name"] for _ in range(n)
    )
    assert set(names) == {"champion", "challenger"}
    sd = (n * 0.2 * 0.8) ** 0.5  # ~12.6
    assert abs(names["challenger"] - 200) < 5 * sd, names


def test_requests_are_balanced_across_an_entitys_replicas(env: Env) -> None:
    env.push(
        {"iris": ep({"m": 100}, {"m": [(f"m-{e}", env.echoes[e]) for e in ("e1", "e2", "e3")]})}
    )
    before = {e: env.echo_count(e) for e in ("e1", "e2", "e3")}
    for _ in range(60):
        assert env.invoke("iris", {"inputs": [1]}).status_code == 200
    served = {e: env.echo_count(e) - before[e] for e in before}
    assert served == {"e1": 20, "e2": 20, "e3": 20}


def test_slow_replica_gets_fewer_requests(env: Env) -> None:
    """Least in-flight: while e1 is busy with a slow request, new requests go to e2."""
    env.push(
        {"iris": ep({"m": 100}, {"m": [("m-e1", env.echoes["e1"]), ("m-e2", env.echoes["e2"])]})}
    )
    slow = threading.Thread(target=env.invoke, args=("iris", {"echo_delay_seconds": 1.0}))
    before1, before2 = env.echo_count("e1"), env.echo_count("e2")
    slow.start()
    deadline = time.monotonic() + 5
    while env.echo_inflight("e1") + env.echo_inflight("e2") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    busy = "e1" if env.echo_inflight("e1") else "e2"
    idle = "e2" if busy == "e1" else "e1"
    counts_before = {"e1": before1, "e2": before2}
    for _ in range(10):
        assert env.invoke("iris", {"inputs": [1]}).status_code == 200
    slow.join()
    assert env.echo_count(idle) - counts_before[idle] == 10
    assert env.echo_count(busy) - counts_before[busy] == 1


def test_table_swap_under_load_fails_no_request(env: Env) -> None:
    tables = [
        {"iris": ep({"a": 100}, {"a": [("a-e1", env.echoes["e1"])]})},
        {
            "iris": ep(
                {"a": 50, "b": 50},
                {"a": [("a-e1", env.echoes["e1"])], "b": [("b-e2", env.echoes["e2"])]},
            )
        },
        {"iris": ep({"b": 100}, {"b": [("b-e2", env.echoes["e2"]), ("b-e3", env.echoes["e3"])]})},
    ]
    env.push(tables[0])
    stop = threading.Event()
    pushes = 0

    def swapper() -> None:
        nonlocal pushes
        while not stop.is_set():
            env.push(tables[pushes % 3], version=pushes + 10)
            pushes += 1
            time.sleep(0.005)

    async def load(total: int, concurrency: int) -> Counter[tuple[int, str]]:
        outcomes: Counter[tuple[int, str]] = Counter()
        queue = iter(range(total))
        url = f"{env.url}/serving-endpoints/iris/invocations"
        async with aiohttp.ClientSession(headers=AUTH) as session:

            async def worker() -> None:
                for i in queue:
                    body = json.dumps({"inputs": [i]})
                    async with session.post(
                        url, data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        echoed = await resp.json()
                        ok = resp.status == 200 and echoed == {"inputs": [i]}
                        outcomes[
                            (resp.status if ok else -1, resp.headers.get("served-model-name", ""))
                        ] += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return outcomes

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        outcomes = asyncio.run(asyncio.wait_for(load(3000, 32), timeout=60))
    finally:
        stop.set()
        thread.join()
    assert pushes >= 10
    assert sum(outcomes.values()) == 3000
    assert {status for status, _ in outcomes} == {200}, outcomes
    assert {name for _, name in outcomes} == {"a", "b"}


def test_drain_waits_for_the_inflight_request(env: Env) -> None:
    env.push({"iris": ep({"m": 100}, {"m": [("old", env.echoes["e3"])]})})
    result: dict[str, Any] = {}

    def slow_request() -> None:
        response = env.invoke("iris", {"inputs": [1], "echo_delay_seconds": 1.2})
        result["status"] = response.status_code
        result["done"] = time.monotonic()

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 5
    while env.echo_inflight("e3") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The new table no longer routes to "old"; its request in flight must still finish.
    env.push({"iris": ep({"m": 100}, {"m": [("new", env.echoes["e1"])]})}, version=2)
    assert env.admin.drain(["old"], timeout_seconds=0.1) is False
    drained = env.admin.drain(["old"], timeout_seconds=10)
    returned = time.monotonic()
    thread.join()
    assert drained is True
    assert result["status"] == 200
    assert returned >= result["done"] - 0.05  # drain returned only once the request was done
    assert env.admin.drain(["never-seen"], timeout_seconds=1) is True


# -- management API and metrics --------------------------------------------------------------


def test_management_api_serves_descriptions(env: Env) -> None:
    description = {
        "name": "iris",
        "state": {"ready": "READY", "config_update": "IN_PROGRESS"},
        "config": {"served_entities": [{"name": "m-1", "entity_name": "iris"}]},
        "pending_config": {"served_entities": []},
        "tags": [{"key": "team", "value": "ml"}],
    }
    env.push(
        {"iris": single(env) | {"description": description}, "other": ep({"x": 100}, {"x": []})}
    )
    assert env.http.get("/api/2.0/serving-endpoints/iris").json() == description
    listing = env.http.get("/api/2.0/serving-endpoints").json()["endpoints"]
    assert {e["name"]: e["state"]["ready"] for e in listing} == {
        "iris": "READY",
        "other": "NOT_READY",
    }


def test_metrics_count_requests_errors_and_latency(env: Env) -> None:
    env.push({"counted": single(env, entity="c-1")})
    since = time.time()
    for _ in range(10):
        assert env.invoke("counted", {"inputs": [1]}).status_code == 200
    for _ in range(3):
        assert env.invoke("counted", {"inputs": [1], "echo_status": 500}).status_code == 500
    assert (
        env.invoke("counted", b"{", headers={"Content-Type": "application/json"}).status_code == 400
    )
    report = env.admin.metrics(since)
    endpoint = report["endpoints"]["counted"]
    assert (endpoint["requests"], endpoint["errors"]) == (14, 3)
    entity = endpoint["entities"]["c-1"]
    assert (entity["requests"], entity["errors"]) == (13, 3)
    assert 0 < entity["p50_ms"] <= entity["p99_ms"] < 1000
    later = env.admin.metrics(time.time() + 1)["endpoints"]["counted"]["entities"]["c-1"]
    assert later["requests"] == 0 and later["total_requests"] == 13 and later["total_errors"] == 3

    env.push({"counted": ep({"c-1": 100}, {"c-1": []})}, version=2)
    since = time.time()
    assert env.invoke("counted", {"inputs": [1]}).status_code == 503
    entity = env.admin.metrics(since)["endpoints"]["counted"]["entities"]["c-1"]
    assert (entity["requests"], entity["errors"]) == (1, 1)


def test_rate_limit_answers_429_with_retry_after_and_changes_live(env: Env) -> None:
    limit = {"calls": 3, "key": "endpoint", "renewal_period": "minute"}
    since = time.time()
    before = env.echo_count("e1")
    reached = 0  # requests the gateway let through to the upstream
    for _ in range(2):
        # A table without the endpoint drops its counters; then 4 requests, well inside one
        # minute unless the window turns over mid-way (then the second attempt is clean).
        env.push({"free": single(env)}, version=6)
        env.push({"limited": single(env) | {"rate_limits": [limit]}, "free": single(env)}, 6)
        statuses = [env.invoke("limited", {"inputs": [i]}).status_code for i in range(3)]
        refused = env.invoke("limited", {"inputs": [9]})
        reached += statuses.count(200) + (refused.status_code == 200)
        if statuses == [200, 200, 200] and refused.status_code == 429:
            break
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    body = refused.json()
    assert body["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert "'limited'" in body["message"] and "3 calls per minute (endpoint)" in body["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Refused requests never reached a replica, and count against no served entity.
    assert env.echo_count("e1") - before == reached
    counted = env.admin.metrics(since)["endpoints"]["limited"]
    assert counted["errors"] == 0
    # Another endpoint of the same gateway is not limited.
    assert all(env.invoke("free", {"inputs": [1]}).status_code == 200 for _ in range(5))
    # A pushed table without the limit lifts it at once, with no restart.
    pid = env.admin.health()["pid"]  # type: ignore[index]
    env.push({"limited": single(env), "free": single(env)}, version=7)
    assert env.invoke("limited", {"inputs": [1]}).status_code == 200
    assert env.admin.health()["pid"] == pid  # type: ignore[index]
    # calls: 0 shuts the endpoint off; the management API is not limited.
    env.push({"limited": single(env) | {"rate_limits": [limit | {"calls": 0}]}}, version=8)
    assert env.invoke("limited", {"inputs": [1]}).status_code == 429
    assert env.http.get("/api/2.0/serving-endpoints/limited").status_code == 200


def test_admin_refuses_a_malformed_rate_limit(env: Env) -> None:
    env.push({"iris": single(env)}, version=9)
    bad = {"version": 10, "endpoints": {"iris": single(env) | {"rate_limits": [{"calls": -1}]}}}
    raw = env.put_raw(bad)
    assert raw.status_code == 400
    assert "endpoints.iris.rate_limits[0]: calls must be a whole number" in raw.json()["message"]
    assert env.admin.get_table().version == 9


def test_admin_rejects_invalid_tables_and_keeps_serving(env: Env) -> None:
    env.push({"iris": single(env)}, version=4)
    bad = {
        "version": 5,
        "endpoints": {"iris": {"routes": [{"served_entity_name": "m", "traffic_percentage": 30}]}},
    }
    raw = env.put_raw(bad)
    assert raw.status_code == 400 and "sum to 100" in raw.json()["message"]
    assert env.admin.get_table().version == 4
    assert env.invoke("iris", {"inputs": [1]}).status_code == 200


def test_client_reports_an_unreachable_gateway_clearly() -> None:
    port = procs.free_port()
    client = GatewayClient(f"http://127.0.0.1:{port}", "token")
    assert client.health() is None
    with pytest.raises(GatewayError, match=f"127.0.0.1:{port} is not reachable"):
        client.metrics()
