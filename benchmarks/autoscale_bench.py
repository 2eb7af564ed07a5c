"""Step load on an autoscaled endpoint, and the first answer after scale to zero.

    .venv/bin/python benchmarks/autoscale_bench.py [--clients 16] [--seconds 60] \
        [--png docs/autoscale.png]

In a temporary copy of the quickstart (its own SQLite registry, the local provider, the
real gateway and runtime, the `declare` CLI in child processes), one run:

1. applies `iris` with min/max provisioned concurrency 4..16 (1..4 replicas of 4) and a
   10 s quiet period, idles 10 s, steps to `--clients` concurrent clients for `--seconds`,
   then idles until the runtime is back at one replica (at most 90 s);
2. prints the time from the step to each extra replica in rotation, p50/p99 latency before,
   during and after the load, the replica count over time and the requests failed;
3. applies the same endpoint with `scale_to_zero_enabled` (to zero after 5 s), waits for
   zero replicas and times the first request (held by the gateway, answered once a replica
   is ready), next to a plain replica cold start (`providers.local.launcher: exec`, a new
   `mlflow models serve` process, timed to its first 200 through the gateway);
4. draws replicas and latency over time (`--png`), destroys everything it applied.

Traffic goes to 127.0.0.1 only; every phase is bounded in time and requests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from declare import procs  # noqa: E402

ROW = {
    "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
    "data": [[5.1, 3.5, 1.4, 0.2]],
}


def manifest(sizing: str, autoscaling: str) -> str:
    return f"""\
name: iris
config:
  served_entities:
    - entity_name: iris
      entity_version: "1"
{sizing}
  traffic_config:
    routes:
      - served_model_name: iris-1
        traffic_percentage: 100
autoscaling:
{autoscaling}"""


class Project:
    def __init__(self, folder: Path, launcher: str = "fork") -> None:
        self.folder = folder
        self.port = procs.free_port()
        (folder / "declare.yaml").write_text(
            "mlflow:\n  tracking_uri: sqlite:///mlflow.db\n"
            f"gateway:\n  port: {self.port}\n"
            f"providers:\n  local:\n    launcher: {launcher}\n"
        )
        self.url = f"http://127.0.0.1:{self.port}/serving-endpoints/iris/invocations"

    def declare(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        done = subprocess.run(
            [sys.executable, "-m", "declare", *args, str(self.folder)],
            capture_output=True, text=True, timeout=600, env=env, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"declare {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def apply(self, text: str) -> None:
        (self.folder / "iris.yaml").write_text(text)
        self.declare("apply", "--auto-approve")

    def in_rotation(self) -> int:
        """Replicas of iris the state routes to (ready, not retired) whose process runs."""
        try:
            state = json.loads((self.folder / "state" / "declare.tfstate.json").read_text())
        except (OSError, ValueError):
            return -1
        ep = state["endpoints"].get("iris") or {"replicas": []}
        return sum(
            1
            for r in ep["replicas"]
            if r["ready"]
            and not r["retired"]
            and procs.is_running(procs.ProcessId.from_json(r["handle"]["data"]))
        )


class Recorder:
    """Clients sending predictions; each answer kept as (start, latency, status)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, float, int]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def client(self, until: float, budget: int) -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(budget):
                if self.stop.is_set() or time.monotonic() > until:
                    return
                t = time.monotonic()
                try:
                    status = http.post(self.url, json={"dataframe_split": ROW}).status_code
                except httpx.HTTPError:
                    status = 0
                with self.lock:
                    self.samples.append((t, time.monotonic() - t, status))

    def run(self, clients: int, seconds: float, budget: int = 200_000) -> None:
        until = time.monotonic() + seconds
        threads = [
            threading.Thread(target=self.client, args=(until, budget // clients), daemon=True)
            for _ in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def percentiles(samples: list[tuple[float, float, int]], start: float, end: float) -> str:
    lat = sorted(s[1] * 1000 for s in samples if start <= s[0] < end and s[2] == 200)
    if not lat:
        return "no requests"
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return f"p50 {statistics.median(lat):.1f} ms, p99 {p99:.1f} ms ({len(lat)} requests)"


def step_load(project: Project, clients: int, seconds: float) -> dict[str, Any]:
    project.apply(
        manifest(
            "      min_provisioned_concurrency: 4\n      max_provisioned_concurrency: 16",
            "  scale_down_after_seconds: 10\n",
        )
    )
    rec = Recorder(project.url)
    counts: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            counts.append((time.monotonic(), project.in_rotation()))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    sampler.start()
    rec.run(1, 10)  # idle: one client, one request at a time
    step = time.monotonic()
    rec.run(clients, seconds)
    after = time.monotonic()
    idle_until = after + 90
    background = threading.Thread(target=rec.run, args=(1, 90), daemon=True)
    background.start()
    while time.monotonic() < idle_until:
        if time.monotonic() - after > 15 and project.in_rotation() == 1:
            break
        time.sleep(0.5)
    rec.stop.set()
    background.join()
    end = time.monotonic()
    done.set()
    sampler.join()
    peak = max(c for _, c in counts)
    reached = {}
    for c in range(2, peak + 1):  # the first moment after the step with c or more
        first = next((t for t, n in counts if t >= step and n >= c), None)
        if first is not None:
            reached[c] = first - step
    failed = sum(1 for s in rec.samples if s[2] != 200)
    return {
        "t0": t0, "step": step, "after": after, "end": end, "counts": counts,
        "samples": rec.samples, "peak": peak, "reached": reached, "failed": failed,
    }  # fmt: skip


def scale_from_zero(project: Project) -> float:
    project.apply(
        manifest(
            "      workload_size: Small\n      scale_to_zero_enabled: true",
            "  scale_to_zero_after_seconds: 5\n",
        )
    )
    deadline = time.monotonic() + 120
    while project.in_rotation() != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    if project.in_rotation() != 0:
        raise SystemExit("the endpoint did not scale to zero within 120 s")
    time.sleep(1)
    started = time.monotonic()
    r = httpx.post(project.url, json={"dataframe_split": ROW}, timeout=120)
    took = time.monotonic() - started
    if r.status_code != 200:
        raise SystemExit(f"the first request after zero got {r.status_code}: {r.text}")
    return took


def draw(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = result["t0"]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5))
    ax1.step([t - t0 for t, _ in result["counts"]], [c for _, c in result["counts"]], where="post")
    ax1.set_ylabel("replicas in rotation")
    ax1.axvspan(result["step"] - t0, result["after"] - t0, color="orange", alpha=0.15)
    ax1.set_ylim(0, max(4, result["peak"]) + 0.5)
    ok = [(s[0] - t0, s[1] * 1000) for s in result["samples"] if s[2] == 200]
    ax2.scatter([x for x, _ in ok], [y for _, y in ok], s=1, alpha=0.3)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (ms)")
    ax2.set_xlabel("seconds (shaded: the step load)")
    ax2.axvspan(result["step"] - t0, result["after"] - t0, color="orange", alpha=0.15)
    fig.suptitle("declare autoscaling: a step from 1 to 16 clients and back (local provider)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--keep-log", type=Path, default=None, help="copy the runtime's log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="declare-autoscale-") as tmp:
        folder = Path(tmp) / "project"
        folder.mkdir()
        shutil.copy(ROOT / "examples" / "quickstart" / "train.py", folder / "train.py")
        subprocess.run([sys.executable, "train.py"], cwd=folder, check=True,
                       capture_output=True, timeout=600)  # fmt: skip
        project = Project(folder)
        try:
            result = step_load(project, args.clients, args.seconds)
            from_zero = scale_from_zero(project)
        finally:
            project.declare("destroy", "--auto-approve")
            if args.keep_log is not None:
                shutil.copy(folder / "state" / "runtime" / "runtime.log", args.keep_log)
        exec_folder = Path(tmp) / "exec"
        shutil.copytree(folder, exec_folder, ignore=shutil.ignore_patterns("state"))
        plain = Project(exec_folder, launcher="exec")
        try:
            cold_exec = scale_from_zero(plain)
        finally:
            plain.declare("destroy", "--auto-approve")
    step, after, end = result["step"], result["after"], result["end"]
    print(f"step load: 1 -> {args.clients} clients for {args.seconds:g} s, and back to 1")
    for count, seconds in sorted(result["reached"].items()):
        print(f"  {count} replicas in rotation {seconds:.2f} s after the step")
    print(f"  most replicas at once: {result['peak']}")
    print(f"  before: {percentiles(result['samples'], result['t0'], step)}")
    print(f"  during: {percentiles(result['samples'], step, after)}")
    print(f"  after:  {percentiles(result['samples'], after, end)}")
    print(f"  requests failed: {result['failed']} of {len(result['samples'])}")
    timeline, last = [], None
    for t, c in result["counts"]:
        if c != last:
            timeline.append(f"{t - result['t0']:.1f}s:{c}")
            last = c
    print(f"  replicas over time: {' '.join(timeline)}")
    print(f"first 200 after scale to zero (fork launcher): {from_zero:.2f} s")
    print(f"first 200 after scale to zero (exec launcher, a plain cold start): {cold_exec:.2f} s")
    print(f"ratio fork/exec: {from_zero / cold_exec:.2f}")
    if args.png is not None:
        draw(result, args.png)
        print(f"picture: {args.png}")


if __name__ == "__main__":
    main()
