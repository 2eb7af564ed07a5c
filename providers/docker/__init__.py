"""The docker provider: replicas as containers on a Docker engine (`provider: docker`).

`DockerProvider` is registered as the `docker` entry point of `declare.providers`. The
package's modules: `settings` (declare.yaml's `providers.docker`), `image` (what goes into a
model-environment image, its content-hash tag, the offline build), `workloads` (CPU/memory
limits and GPU device requests by workload type) and `provider` (containers: labels, host
networking, restart policy, status, logs, cleanup).
"""

from providers.docker.provider import DockerProvider
from providers.docker.settings import DEFAULT_BASE_IMAGE, DockerSettings

__all__ = ["DEFAULT_BASE_IMAGE", "DockerProvider", "DockerSettings"]
