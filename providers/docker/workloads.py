"""Databricks workload types as Docker resources: CPU and memory limits, GPU device requests.

`workload_size` (Small/Medium/Large) is a replica count, decided by the core; what one
replica may use is decided here by `workload_type`:

    workload_type     GPUs (device request)   CPUs   memory   Databricks' instance
    CPU               0                       1*     2 GiB*   -
    GPU_SMALL         1                       4      16 GiB   1 x T4
    GPU_MEDIUM        1                       8      32 GiB   1 x A10G
    GPU_LARGE         1                       12     64 GiB   1 x A100
    MULTIGPU_MEDIUM   4                       24     96 GiB   4 x A10G

(* `providers.docker.cpus` / `memory`.) Limits above what the engine's machine has are
lowered to what it has (Docker refuses a CPU limit above the machine's CPU count). A GPU
replica asks the engine for `count` GPUs with the `nvidia` driver and the `gpu` capability,
which is what `docker run --gpus N` sends; the engine needs the NVIDIA container runtime.

Pure: no engine is contacted here. The GPU paths were tested for what they send to the
engine, not run on a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GPU_COUNTS", "Resources", "gpu_runtime_problem", "resources"]

GPU_COUNTS: Mapping[str, int] = {
    "CPU": 0,
    "GPU_SMALL": 1,
    "GPU_MEDIUM": 1,
    "GPU_LARGE": 1,
    "MULTIGPU_MEDIUM": 4,
}
_GPU_LIMITS: Mapping[str, tuple[float, int]] = {
    "GPU_SMALL": (4.0, 16 * 2**30),
    "GPU_MEDIUM": (8.0, 32 * 2**30),
    "GPU_LARGE": (12.0, 64 * 2**30),
    "MULTIGPU_MEDIUM": (24.0, 96 * 2**30),
}
GPU_DRIVER = "nvidia"


@dataclass(frozen=True)
class Resources:
    """What one replica container is given."""

    cpus: float
    memory_bytes: int
    gpus: int

    @property
    def nano_cpus(self) -> int:
        return int(self.cpus * 1e9)

    def device_requests(self) -> list[dict[str, Any]]:
        """The engine API's DeviceRequests (`docker run --gpus N`); empty for CPU replicas."""
        if not self.gpus:
            return []
        return [
            {
                "Driver": GPU_DRIVER,
                "Count": self.gpus,
                "DeviceIDs": None,
                "Capabilities": [["gpu"]],
                "Options": {},
            }
        ]


def resources(
    workload_type: str,
    cpu_cpus: float,
    cpu_memory: int,
    engine_cpus: int | None = None,
    engine_memory: int | None = None,
) -> Resources:
    """The limits of one replica of `workload_type`, within what the engine's machine has."""
    if workload_type not in GPU_COUNTS:
        raise ValueError(f"unknown workload_type {workload_type!r}")
    cpus, memory = _GPU_LIMITS.get(workload_type, (cpu_cpus, cpu_memory))
    if engine_cpus:
        cpus = min(cpus, float(engine_cpus))
    if engine_memory:
        memory = min(memory, engine_memory)
    return Resources(cpus=cpus, memory_bytes=memory, gpus=GPU_COUNTS[workload_type])


def gpu_runtime_problem(workload_type: str, engine_info: Mapping[str, Any]) -> str | None:
    """Why this engine cannot run `workload_type`, or None when it can (or needs no GPU).

    The engine can serve GPUs when `docker info` lists the `nvidia` runtime (what the NVIDIA
    Container Toolkit registers).
    """
    count = GPU_COUNTS.get(workload_type, 0)
    if count == 0:
        return None
    runtimes = sorted((engine_info.get("Runtimes") or {}).keys())
    if GPU_DRIVER in runtimes:
        return None
    plural = "s" if count != 1 else ""
    return (
        f"workload_type {workload_type} needs {count} GPU{plural}, and this Docker engine has no "
        f"GPU runtime: 'nvidia' is not among its runtimes ({', '.join(runtimes) or 'none'}). "
        "Install the NVIDIA Container Toolkit on the engine's host and register it "
        "(nvidia-ctk runtime configure --runtime=docker), or serve this entity with "
        "workload_type CPU"
    )
