"""Recorded state: where it is stored, how writes stay safe, and who holds the lock.

Storage (`backend.py` interfaces and shared rules, `local.py` the local file backend) moves
plain JSON documents and owns their `serial` and `lineage`; `declare.state.document` gives
the payload its meaning, and `declare.state.schema` checks every field of a document read
(schemas/state.schema.json) before it is used. Storage knows nothing of manifests, plans or
providers.

    backend = LocalStateBackend(project_dir / "state")
    with backend.locked("apply", timeout_seconds=30):
        doc = backend.read()                  # None: no state yet
        doc = backend.write(changed(doc))     # serial + 1; StaleStateError if it moved on
"""

from declare.state.backend import (
    FORMAT_VERSION,
    LockInfo,
    StateBackend,
    StateLocker,
    StateReader,
    StateWriter,
)
from declare.state.local import LocalStateBackend

__all__ = [
    "FORMAT_VERSION",
    "LocalStateBackend",
    "LockInfo",
    "StateBackend",
    "StateLocker",
    "StateReader",
    "StateWriter",
]
