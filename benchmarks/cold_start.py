"""Cold start of a local replica, fork server vs. `mlflow models serve`, part by part.

    .venv/bin/python benchmarks/cold_start.py [--repeats 5]

Trains its own model in a fresh temporary MLflow registry (sqlite; a LogisticRegression on
the iris data, logged with an input example by a child interpreter), then starts replicas of
it with the local provider, one at a time, for each launcher:

- exec: `python -m mlflow models serve` (`providers.local.launcher: exec`);
- fork, warm: the fork server running, after one replica taught it the model's modules;
- and once each: fork from a fork server that knows only its base modules (the first replica
  of a new state folder), and fork from a new fork server that preloads what the first one
  learned (as after a restart), with the time the fork server takes to answer.

For every start it measures, from the `start_replica` call: the process running (its
recorded pid and start time alive), its port open, and the first 200 answer to a
prediction; it prints each part's median over the repeats and the ratio fork/exec. Every
replica and fork server is stopped by the provider at the end; traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from declare import procs
from declare.model import ReplicaSpec, ResolvedModel
from declare.provider import ProviderContext
from providers.local import LocalProvider

TRAIN = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.filterwarnings("ignore")
    import mlflow, mlflow.sklearn, sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    folder = sys.argv[1]
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("cold-start", artifact_location=folder + "/art")
    X, y = load_iris(return_X_y=True, as_frame=True)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.sklearn.log_model(
            LogisticRegression(max_iter=500).fit(X, y), name="model", input_example=X.head(3),
            registered_model_name="iris",
            pip_requirements=[f"mlflow=={mlflow.__version__}",
                              f"scikit-learn=={sklearn.__version__}"],
        )
    print(json.dumps({"source": client.get_model_version_download_uri("iris", "1")}))
    """
)
PARTS = ("running", "port open", "first prediction")


def train(folder: Path) -> tuple[ResolvedModel, dict[str, str]]:
    uri = f"sqlite:///{folder}/mlflow.db"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    result = subprocess.run(
        [sys.executable, "-c", TRAIN, str(folder)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"training failed:\n{result.stderr[-3000:]}")
    source = json.loads(result.stdout.strip().splitlines()[-1])["source"].removeprefix("file://")
    model = ResolvedModel(
        uri="models:/iris/1", pinned_uri="models:/iris/1", name="iris", version="1",
        source=source, input_example="serving_input_example.json",
    )  # fmt: skip
    return model, env


def spec(model: ResolvedModel, env: dict[str, str], index: int) -> ReplicaSpec:
    return ReplicaSpec(
        project="bench", endpoint="iris", entity="iris-1", generation="g1", index=index,
        model=model, model_env=env,
    )  # fmt: skip


def measure(provider: LocalProvider, replica: ReplicaSpec, body: bytes) -> dict[str, float]:
    """Seconds from the start request to each part; the replica is stopped afterwards."""
    started = time.perf_counter()
    handle = provider.start_replica(replica)
    proc = procs.ProcessId(int(handle.data["pid"]), int(handle.data["start_time"]))
    times: dict[str, float] = {}
    while not procs.is_running(proc):
        time.sleep(0.001)
    times["running"] = time.perf_counter() - started
    port = int(handle.data["port"])
    with httpx.Client(timeout=5.0) as client:
        while "first prediction" not in times:
            if time.perf_counter() - started > 120:
                raise SystemExit(f"no prediction in 120 s:\n{provider.logs(handle, 30)}")
            if "port open" not in times:
                if procs.port_open("127.0.0.1", port, timeout=0.2):
                    times["port open"] = time.perf_counter() - started
                else:
                    time.sleep(0.005)
                    continue
            try:
                answer = client.post(
                    f"{handle.url}/invocations",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code == 200:
                times["first prediction"] = time.perf_counter() - started
            else:
                time.sleep(0.01)
    forked = "forked by the fork server" in provider.logs(handle, 200)
    provider.stop_replica(handle, grace_seconds=5.0)
    times["forked"] = float(forked)
    return times


def wait_learned(provider: LocalProvider) -> None:
    """Until the fork server has imported everything it was taught."""
    while True:
        status = provider.forkserver.status(timeout=60)
        if status is not None and not status["learning"]:
            return
        time.sleep(0.2)


def row(name: str, runs: list[dict[str, float]]) -> dict[str, float]:
    medians = {p: statistics.median(r[p] for r in runs) for p in PARTS}
    cells = "  ".join(f"{medians[p]:>16.3f}" for p in PARTS)
    forked = sum(int(r["forked"]) for r in runs)
    print(f"{name:<34}{cells}   n={len(runs)} forked={forked}")
    return medians


def provider_in(folder: Path, launcher: str) -> LocalProvider:
    project = folder / launcher
    project.mkdir()
    context = ProviderContext("bench", project, project / "state", {"launcher": launcher})
    return LocalProvider(context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        folder = Path(tmp)
        model, env = train(folder)
        body = (Path(model.source) / "serving_input_example.json").read_bytes()
        execer = provider_in(folder, "exec")
        forker = provider_in(folder, "fork")
        try:
            t0 = time.perf_counter()
            assert forker.start_forkserver(wait_seconds=120), "the fork server did not answer"
            server_start = time.perf_counter() - t0
            fork_first = [measure(forker, spec(model, env, 0), body)]
            wait_learned(forker)
            fork_warm = [measure(forker, spec(model, env, i), body) for i in range(args.repeats)]
            forker.stop_forkserver()
            t0 = time.perf_counter()
            assert forker.start_forkserver(wait_seconds=120), "the fork server did not answer"
            restart = time.perf_counter() - t0
            fork_relearned = [measure(forker, spec(model, env, 0), body)]
            execs = [measure(execer, spec(model, env, i), body) for i in range(args.repeats)]
        finally:
            forker.stop_forkserver()
        print(f"\nseconds from start_replica to ... (median; {os.cpu_count()} CPUs)")
        print(f"{'':<34}" + "  ".join(f"{p:>16}" for p in PARTS))
        exec_m = row("exec (mlflow models serve)", execs)
        fork_m = row("fork, warm fork server", fork_warm)
        row("fork, first replica it serves", fork_first)
        row("fork, new server, learned list", fork_relearned)
        print(f"{'ratio fork (warm) / exec':<34}" + "  ".join(
            f"{fork_m[p] / exec_m[p]:>16.3f}" for p in PARTS
        ))  # fmt: skip
        print(f"fork server ready after {server_start:.2f}s (new state folder), "
              f"{restart:.2f}s (started anew, preloading what it learned)")  # fmt: skip


if __name__ == "__main__":
    main()
