"""The Docker engine the docker provider talks to: its URL, one client, its `docker info`.

The engine is `providers.docker.engine` from declare.yaml, else DOCKER_HOST, else the local
socket. The client is made and pinged on first use and kept; so is `docker info`, from
which the engine's architecture, CPU count, memory and runtimes (GPUs) are read.

What it does not do: create or inspect containers or images (`providers.docker.containers`,
`providers.docker.build`), or retry an engine that does not answer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from declare.errors import ProviderError
from providers.docker.errors import engine_errors
from providers.docker.workloads import GPU_COUNTS, gpu_runtime_problem

__all__ = ["DEFAULT_ENGINE", "Engine"]

DEFAULT_ENGINE = "unix:///var/run/docker.sock"
_UNREACHABLE_HINT = (
    ". Start it (scripts/docker-engine does, on Debian), or point providers.docker.engine "
    "in declare.yaml or DOCKER_HOST at a running engine"
)


class Engine:
    """One Docker engine: the client connected to it and its `docker info`, each got once."""

    def __init__(self, configured: str | None) -> None:
        self.configured = configured  # providers.docker.engine, None for the environment's
        self._client: Any = None
        self._info: Mapping[str, Any] | None = None

    @property
    def url(self) -> str:
        return self.configured or os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE

    @property
    def api_url(self) -> str:
        """The engine's URL as a plain HTTP client must reach it: `url`, except that a TCP
        engine the environment reaches over TLS (DOCKER_TLS_VERIFY) is `https://`."""
        url = self.url
        tls = self.configured is None and bool(os.environ.get("DOCKER_TLS_VERIFY"))
        return "https://" + url.removeprefix("tcp://") if tls and url.startswith("tcp://") else url

    @property
    def is_local(self) -> bool:
        """True when the engine sees this machine's folders (a unix socket here)."""
        return self.url.startswith("unix://")

    def client(self) -> Any:
        """The docker SDK client, connected and pinged; ProviderError when nothing answers."""
        if self._client is not None:
            return self._client
        import docker

        url = self.url
        with engine_errors(
            f"cannot reach the Docker engine at {url}", hint=_UNREACHABLE_HINT, also=(OSError,)
        ):
            if self.configured is None:
                client = docker.from_env(version="auto", timeout=600)
            else:
                client = docker.DockerClient(
                    base_url=url,
                    version="auto",
                    timeout=600,
                    use_ssh_client=url.startswith("ssh://"),
                )
            client.ping()
        self._client = client
        return client

    def info(self) -> Mapping[str, Any]:
        """`docker info` of the engine (asked once)."""
        if self._info is None:
            client = self.client()
            with engine_errors(f"the Docker engine at {self.url} does not answer"):
                info: Mapping[str, Any] = client.info()
            self._info = info
        return self._info

    def check_workload(self, workload_type: str, where: str = "") -> None:
        """Raise ProviderError when the engine cannot run `workload_type` (no GPU runtime)."""
        if workload_type not in GPU_COUNTS:
            raise ProviderError(f"{where}unknown workload_type {workload_type!r}")
        problem = gpu_runtime_problem(workload_type, self.info())
        if problem:
            raise ProviderError(f"{where}{problem} (engine {self.url})")
