"""The docker provider: replicas as containers on a Docker engine (`provider: docker`).

`DockerProvider` is registered as the `docker` entry point of `declare.providers`. The
package's modules, one responsibility each:

    settings      declare.yaml's `providers.docker`, validated
    engine        the engine's URL, its client and `docker info` (GPU runtimes)
    errors        the one mapper of docker SDK errors to ProviderError
    image         what goes into a model-environment image, and its content-hash tag
    build         the offline build of that image (host wheel cache, build log)
    image_record  the images this project used, and pruning them
    workloads     CPU/memory limits and GPU device requests by workload type
    artifacts     the model's artifacts: mounted read-only, downloaded or copied in
    containers    replica containers: config and labels, status, stop, logs
    provider      the Provider Protocol, putting the parts together
"""

from providers.docker.provider import DockerProvider
from providers.docker.settings import DEFAULT_BASE_IMAGE, DockerSettings

__all__ = ["DEFAULT_BASE_IMAGE", "DockerProvider", "DockerSettings"]
