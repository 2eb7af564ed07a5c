"""Helpers shared by the integration and reliability tests: a project folder driven through
the real `declare` CLI in child processes, and a bounded load generator on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from declare import procs

IRIS_ROW = {
    "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
    "data": [[5.1, 3.5, 1.4, 0.2]],
}


def manifest(entity: str, version: str, size: str = "Small", rollout: str = "") -> str:
    """An endpoint `iris` serving `entity` version `version` at 100 %, as Databricks writes it."""
    return f"""\
name: iris
config:
  served_entities:
    - entity_name: {entity}
      entity_version: "{version}"
      workload_size: {size}
  traffic_config:
    routes:
      - served_model_name: {entity}-{version}
        traffic_percentage: 100
{rollout}"""


class CliProject:
    """A project folder, its gateway port, and the `declare` CLI run on it."""

    def __init__(self, folder: Path, tracking_uri: str, extra_config: str = "") -> None:
        self.folder = folder
        self.port = procs.free_port()
        (folder / "declare.yaml").write_text(
            f"mlflow:\n  tracking_uri: {tracking_uri}\n"
            f"gateway:\n  port: {self.port}\n"
            "timeouts:\n  ready_seconds: 120\n" + extra_config
        )

    def write(self, text: str, name: str = "iris.yaml") -> None:
        (self.folder / name).write_text(text)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(extra or {})
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "declare", *args, str(self.folder)]

    def declare(
        self, *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, env=self.env(env)
        )

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The CLI with exactly these arguments (no project folder appended)."""
        return subprocess.run(
            [sys.executable, "-m", "declare", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/serving-endpoints/iris/invocations"

    def predict(self) -> httpx.Response:
        return httpx.post(self.url, json={"dataframe_split": IRIS_ROW}, timeout=30)

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.folder / "state" / "declare.tfstate.json").read_text()
        )
        return data

    def recorded_pids(self) -> list[procs.ProcessId]:
        return [
            procs.ProcessId.from_json(rep["handle"]["data"])
            for ep in self.state()["endpoints"].values()
            for rep in ep["replicas"]
        ]

    def provider_records(self) -> list[dict[str, Any]]:
        """The local provider's own replica records (what runs, without the state file)."""
        folder = self.folder / "state" / "local" / "replicas"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

    def runtime_pids(self) -> list[procs.ProcessId]:
        """The runtime and its keeper, as runtime.json records them (none when stopped)."""
        path = self.folder / "state" / "runtime" / "runtime.json"
        if not path.exists():
            return []
        record = json.loads(path.read_text())
        return [
            procs.ProcessId.from_json(record[k]) for k in ("runtime", "keeper") if record.get(k)
        ]

    def events(self, endpoint: str = "iris") -> list[dict[str, Any]]:
        """The runtime's events recorded for `endpoint` (replacements, scaling, crashes)."""
        events: list[dict[str, Any]] = self.state()["endpoints"][endpoint].get("events", [])
        return events

    def event(
        self, kind: str, contains: str = "", endpoint: str = "iris", timeout: float = 30.0
    ) -> dict[str, Any]:
        """The newest runtime event of `kind` whose detail has `contains`, waited for: the
        runtime records a replacement once the replacement is done (after the old replica's
        stop), in a state write of its own, so a reader may see the new replica first."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                e
                for e in self.events(endpoint)
                if e["kind"] == kind and contains in e.get("detail", "")
            ]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {kind!r} event with {contains!r} after {timeout:g} s: "
                    f"{self.events(endpoint)}"
                )
            time.sleep(0.1)

    def stop_leftovers(self) -> None:
        """After a test: stop, by PID, the runtime processes a failed destroy left."""
        for proc in self.runtime_pids():
            procs.stop(proc, grace_seconds=2.0)

    def gateway_pid(self) -> procs.ProcessId:
        record = json.loads((self.folder / "state" / "gateway" / "gateway.json").read_text())
        return procs.ProcessId.from_json(record["process"])


class Load:
    """Continuous requests from a few threads until stopped: bounded in count and time."""

    def __init__(
        self, url: str, threads: int = 4, max_requests: int = 20_000, max_seconds: float = 240
    ) -> None:
        self.url = url
        self.results: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.failed_by_entity: Counter[str] = Counter()
        self.failure_times: list[float] = []
        self.ok_times: list[float] = []
        self.started = time.monotonic()
        self.stopped: float | None = None
        self._stop = threading.Event()
        self._budget = max_requests
        self._max_seconds = max_seconds
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if self._budget <= 0:
                        return
                    self._budget -= 1
                served = "?"
                try:
                    r = client.post(self.url, json={"dataframe_split": IRIS_ROW})
                    key = str(r.status_code)
                    served = r.headers.get("served-model-name", "?")
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                with self._lock:
                    self.results[key] += 1
                    self.served[served] += 1
                    if key == "200":
                        self.ok_times.append(time.monotonic())
                    else:
                        self.failed_by_entity[served] += 1
                        self.failure_times.append(time.monotonic())

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.stopped = time.monotonic()

    @property
    def longest_gap(self) -> float:
        """The longest stretch, in seconds, without a 200 while the load ran."""
        end = self.stopped if self.stopped is not None else time.monotonic()
        with self._lock:
            marks = [self.started, *sorted(self.ok_times), end]
        return max(b - a for a, b in itertools.pairwise(marks))

    @property
    def sent(self) -> int:
        return sum(self.results.values())

    @property
    def failed(self) -> int:
        return self.sent - self.results["200"]
