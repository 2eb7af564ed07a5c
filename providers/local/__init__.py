"""The local provider: replicas as detached MLflow scoring servers on loopback (`provider: local`).

`LocalProvider` is registered as the `local` entry point of `declare.providers`
(`providers.local:LocalProvider`). The package's modules: `settings` (declare.yaml's
`providers.local`), `records` (the replica records and logs on disk), `launch` (the checks
before a start, the command line and environment of one replica) and `provider` (the
Provider itself: start, status, stop, list, logs).
"""

from providers.local.provider import LocalProvider
from providers.local.settings import LocalSettings

__all__ = ["LocalProvider", "LocalSettings"]
