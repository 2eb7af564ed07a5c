"""What two clients posting 12 MB JSON bodies cost everyone else, through the gateway and
directly to the same upstream, in one run.

    .venv/bin/python benchmarks/big_bodies.py [--small 200] [--posters 2]

Starts one echo upstream and one gateway on 127.0.0.1 (both stopped at the end by their own
process handles), then measures the latency of small requests sent one at a time: alone,
and while `--posters` threads post a 12 MB `{"inputs": [...]}` in a loop; first directly to
the echo upstream (the baseline: what the upstream and the machine cost), then through the
gateway. Prints median and p99 of each and the ratios. Bounded by --small requests per
phase; the posters stop when a phase ends.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from declare import procs
from declare.gateway.echo import spawn_echo
from declare.gateway.process import start_gateway, stop_gateway
from declare.gateway.table import RoutingTable

BIG = json.dumps({"inputs": list(range(1_500_000))}).encode()


def latencies(url: str, n: int) -> tuple[float, float]:
    out = []
    with httpx.Client(timeout=60, trust_env=False) as client:
        for i in range(n):
            t = time.perf_counter()
            assert client.post(url, json={"inputs": [i]}).status_code == 200
            out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[max(0, int(len(out) * 0.99) - 1)]


def under_posters(url: str, n: int, posters: int) -> tuple[float, float, int]:
    stop = threading.Event()
    sent = [0]

    def post() -> None:
        with httpx.Client(timeout=120, trust_env=False) as client:
            while not stop.is_set():
                r = client.post(url, content=BIG, headers={"Content-Type": "application/json"})
                assert r.status_code == 200, r.text[:200]
                sent[0] += 1

    threads = [threading.Thread(target=post, daemon=True) for _ in range(posters)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    try:
        p50, p99 = latencies(url, n)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    return p50, p99, sent[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--posters", type=int, default=2)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="declare-bigbodies-"))
    echo_port = procs.free_port()
    echo = spawn_echo(echo_port, "e1")
    try:
        port = procs.free_port(exclude=frozenset({echo_port}))
        record = start_gateway(state, "127.0.0.1", port, auth_token=None)
        upstream = f"http://127.0.0.1:{echo_port}"
        table = {
            "version": 1,
            "endpoints": {
                "iris": {
                    "routes": [{"served_entity_name": "m", "traffic_percentage": 100}],
                    "entities": {"m": {"replicas": [{"id": "a", "url": upstream}]}},
                }
            },
        }
        record.client().put_table(RoutingTable.from_json(table))
        print(
            f"big body {len(BIG) / 1e6:.1f} MB, {args.posters} posters, {args.small} small requests"
        )
        rows = []
        for label, url in (
            ("direct", f"{upstream}/invocations"),
            ("gateway", f"{record.base_url}/serving-endpoints/iris/invocations"),
        ):
            alone = latencies(url, args.small)
            loaded = under_posters(url, args.small, args.posters)
            rows.append((label, alone, loaded))
            print(
                f"{label:8} alone p50 {alone[0]:6.2f} ms p99 {alone[1]:7.2f} ms | with posters "
                f"p50 {loaded[0]:7.2f} ms p99 {loaded[1]:8.2f} ms ({loaded[2]} big bodies)"
            )
        (_, d_alone, d_load), (_, g_alone, g_load) = rows
        print(
            f"slow-down by the posters: direct p50 x{d_load[0] / d_alone[0]:.1f}, gateway p50 "
            f"x{g_load[0] / g_alone[0]:.1f}; gateway/direct under posters p50 "
            f"{g_load[0] / d_load[0]:.2f}x, p99 {g_load[1] / d_load[1]:.2f}x"
        )
    finally:
        stop_gateway(state, grace_seconds=5)
        echo.terminate()
        echo.wait(timeout=10)


if __name__ == "__main__":
    main()
