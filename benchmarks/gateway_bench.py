"""Throughput of the gateway against the trivial echo upstream, gateway vs. direct.

    .venv/bin/python benchmarks/gateway_bench.py [--requests 20000] [--concurrency 64]

Starts one echo upstream and one gateway (both on 127.0.0.1, both stopped at the end by
their own process handles), sends the same bounded load first directly to the upstream and
then through the gateway with an aiohttp client, then through the gateway to an endpoint with
a rate limit it never reaches (the limiter's cost), and prints requests/s, p50/p99 latency
and the ratios. Client, gateway and upstream share the machine's cores, so the figures are lower
bounds of what each could do alone. Every run is bounded by --requests and --time-limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from declare import procs
from declare.gateway.echo import spawn_echo
from declare.gateway.process import start_gateway, stop_gateway
from declare.gateway.table import RoutingTable

BODY = json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}).encode()


async def load(url: str, total: int, concurrency: int, limit: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    failures = 0
    remaining = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failures
            headers = {"Content-Type": "application/json"}
            for _ in remaining:
                started = time.perf_counter()
                async with session.post(url, data=BODY, headers=headers) as resp:
                    await resp.read()
                    failures += resp.status != 200
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), limit)
        elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{failures} of {total} requests failed against {url}")
    return elapsed, sorted(latencies)


def run(url: str, total: int, concurrency: int, limit: float) -> float:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(load(url, min(total, 2000), concurrency, limit))  # warm-up
        elapsed, latencies = runner.run(load(url, total, concurrency, limit))
    rps = total / elapsed
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"  {rps:9.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   ({elapsed:.2f} s)")
    return rps


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per run")
    args = parser.parse_args()

    echo_port = procs.free_port()
    echo = spawn_echo(echo_port)
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        try:
            record = start_gateway(
                state_dir,
                "127.0.0.1",
                procs.free_port(exclude=frozenset({echo_port})),
                auth_token=None,
            )
            upstream = {"replicas": [{"id": "b-0", "url": f"http://127.0.0.1:{echo_port}"}]}
            endpoint = {
                "routes": [{"served_entity_name": "b", "traffic_percentage": 100}],
                "entities": {"b": upstream},
            }
            never_reached = {"calls": 10**12, "key": "endpoint", "renewal_period": "minute"}
            table = {
                "version": 1,
                "endpoints": {
                    "bench": endpoint,
                    "limited": endpoint | {"rate_limits": [never_reached]},
                },
            }
            record.client().put_table(RoutingTable.from_json(table))
            print(f"{args.requests} requests, {args.concurrency} concurrent, {len(BODY)} B JSON")
            print("direct to the upstream:")
            direct = run(
                f"http://127.0.0.1:{echo_port}/invocations",
                args.requests,
                args.concurrency,
                args.time_limit,
            )
            print("through the gateway:")
            gateway = run(
                f"{record.base_url}/serving-endpoints/bench/invocations",
                args.requests,
                args.concurrency,
                args.time_limit,
            )
            print("through the gateway, endpoint with a rate limit (never reached):")
            limited = run(
                f"{record.base_url}/serving-endpoints/limited/invocations",
                args.requests,
                args.concurrency,
                args.time_limit,
            )
            print(f"gateway / direct = {gateway / direct:.2f}")
            print(f"rate-limited / gateway = {limited / gateway:.2f}")
        finally:
            stop_gateway(state_dir, grace_seconds=5)
            echo.terminate()
            echo.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
