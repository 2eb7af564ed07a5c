"""The names declare derives from endpoint and served entity names, and the limits that keep
every name a provider makes from them within what the provider can use.

    endpoint name       1..ENDPOINT_NAME_MAX (63) letters, digits, '-' and '_'
    served entity name  1..ENTITY_NAME_MAX (128) of the same characters
    project name        1..PROJECT_NAME_MAX (63) (declare.yaml `project:` or the folder name)
    replica id          `<endpoint>-<entity>-<6 hex>` lowercased, each run of other characters
                        one '-' (`replica_id_stem`), at most REPLICA_ID_MAX (128) characters

Every name a provider derives from an endpoint and an entity is a replica id with fixed text
around it, and the project name: the local provider's files `<id>.json`,
`.<id>.json.<pid>.tmp`, `<id>.log`, `<id>.stopped.log` (a file name holds at most 255 bytes),
the docker provider's container `declare-<project>-<id>` (at most 200 characters) and its log
file. REPLICA_ID_MAX is the longest id for which all of them fit, one limit for every provider,
so a manifest that one provider accepts every provider accepts. The manifests check it when
they are validated (`replica_id_problem`); providers check it again when they name a replica.

The schemas (schemas/endpoint.schema.json, schemas/project.schema.json) state the same name
limits as patterns. Pure: no I/O.
"""

from __future__ import annotations

import re

ENDPOINT_NAME_MAX = 63
ENTITY_NAME_MAX = 128
PROJECT_NAME_MAX = 63
REPLICA_ID_SUFFIX_CHARS = 7  # '-' and 6 hex digits, the part that makes an id unique
REPLICA_ID_MAX = 128


def sanitize_id(text: str) -> str:
    """`text` lowercased, with every run of characters outside [a-z0-9-] turned into one '-'."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    return re.sub(r"-{2,}", "-", cleaned).strip("-")


def replica_id_stem(endpoint: str, entity: str) -> str:
    """What every replica id of `entity` in `endpoint` starts with (before '-<6 hex>')."""
    return sanitize_id(f"{endpoint}-{entity}")


def replica_id_length(endpoint: str, entity: str) -> int:
    """The length of every replica id of `entity` in `endpoint`."""
    return len(replica_id_stem(endpoint, entity)) + REPLICA_ID_SUFFIX_CHARS


def replica_id_problem(endpoint: str, entity: str) -> str | None:
    """Why the replica ids of `entity` in `endpoint` are too long, or None when they fit."""
    length = replica_id_length(endpoint, entity)
    if length <= REPLICA_ID_MAX:
        return None
    return (
        f"with the endpoint name ({len(endpoint)} characters), this served entity name "
        f"({len(entity)} characters) makes replica ids of {length} characters "
        f"(<endpoint>-<entity>-<6 hex>); providers name their files and containers after "
        f"replica ids of at most {REPLICA_ID_MAX}: shorten the two names by "
        f"{length - REPLICA_ID_MAX} characters together"
    )
