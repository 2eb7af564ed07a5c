"""Gateway throughput with inference-table capture on vs off, in the same run.

    .venv/bin/python benchmarks/capture_bench.py [--requests 20000] [--concurrency 64] [--rounds 3]

Starts one echo upstream and one gateway with a capture root in a temporary folder (both on
127.0.0.1, both stopped at the end by their own process handles) and routes two endpoints
to the same upstream: `plain` (no capture) and `captured` (auto_capture_config enabled).
It sends the same bounded load to each, alternating off/on for --rounds rounds so that both
see the same machine, and prints requests/s and p50/p99 per run, the median of each, and
the ratio on/off (the goal is >= 0.95), and the gateway process's CPU time per request
(all its threads, from /proc), which a loaded machine disturbs less. After a clean stop it
reads the Delta table and prints how many rows were written and how many records the
buffer dropped. Client, gateway,
writer thread and upstream share the machine's cores: the figures are lower bounds. Every
run is bounded by --requests and --time-limit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gateway_bench import BODY, run
from declare import procs
from declare.gateway.echo import spawn_echo
from declare.gateway.process import start_gateway, stop_gateway
from declare.gateway.table import RoutingTable
from declare.model import CaptureTarget

TARGET = CaptureTarget("bench", "default", "captured")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads, the writer's too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measured(pid: int, url: str, args: argparse.Namespace, cpu: list[float]) -> float:
    """One run's requests/s; appends the gateway's CPU milliseconds per request to `cpu`."""
    before = cpu_seconds(pid)
    rps = run(url, args.requests, args.concurrency, args.time_limit)
    sent = args.requests + min(args.requests, 2000)  # with the warm-up
    cpu.append((cpu_seconds(pid) - before) * 1000 / sent)
    print(f"  gateway CPU {cpu[-1]:.3f} ms per request")
    return rps


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per run")
    args = parser.parse_args()

    echo_port = procs.free_port()
    echo = spawn_echo(echo_port)
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        capture_root = state_dir / "capture"
        off: list[float] = []
        on: list[float] = []
        cpu_off: list[float] = []
        cpu_on: list[float] = []
        try:
            record = start_gateway(
                state_dir,
                "127.0.0.1",
                procs.free_port(exclude=frozenset({echo_port})),
                auth_token=None,
                capture_root=capture_root,
            )
            upstream = {"replicas": [{"id": "b-0", "url": f"http://127.0.0.1:{echo_port}"}]}
            endpoint = {
                "routes": [{"served_entity_name": "b", "traffic_percentage": 100}],
                "entities": {"b": upstream},
            }
            table = {
                "version": 1,
                "endpoints": {
                    "plain": endpoint,
                    "captured": endpoint | {"capture": TARGET.to_json()},
                },
            }
            client = record.client()
            client.put_table(RoutingTable.from_json(table))
            print(f"{args.requests} requests, {args.concurrency} concurrent, {len(BODY)} B JSON")
            base = f"{record.base_url}/serving-endpoints"
            pid = record.process.pid
            for n in range(1, args.rounds + 1):
                print(f"round {n}, capture off:")
                off.append(measured(pid, f"{base}/plain/invocations", args, cpu_off))
                print(f"round {n}, capture on:")
                on.append(measured(pid, f"{base}/captured/invocations", args, cpu_on))
            stats = client.metrics()["capture"]
        except SystemExit:  # requests failed: show what the gateway said about them
            log = record.log_path.read_text(errors="replace").splitlines()
            print("\n".join(line for line in log if "WARNING" in line or "ERROR" in line)[-3000:])
            raise
        finally:
            stop_gateway(state_dir, grace_seconds=30)
            echo.terminate()
            echo.wait(timeout=10)
        from deltalake import DeltaTable

        written = DeltaTable(str(TARGET.path(capture_root))).to_pyarrow_table().num_rows
    median_off, median_on = statistics.median(off), statistics.median(on)
    print(f"median capture off {median_off:9.0f} req/s")
    print(f"median capture on  {median_on:9.0f} req/s")
    print(f"capture on / off = {median_on / median_off:.2f} (goal >= 0.95)")
    cpu_median_off, cpu_median_on = statistics.median(cpu_off), statistics.median(cpu_on)
    print(
        f"gateway CPU per request: off {cpu_median_off:.3f} ms, on {cpu_median_on:.3f} ms "
        f"(off / on = {cpu_median_off / cpu_median_on:.2f}: the throughput ratio a gateway "
        "bound by its CPU would see)"
    )
    sent = args.rounds * (args.requests + min(args.requests, 2000))  # with the warm-ups
    print(
        f"rows in the table: {written} of {sent} captured requests "
        f"(dropped by a full buffer: {stats['dropped']}, failed writes: {stats['failed']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
