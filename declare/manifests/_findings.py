"""Findings: the problems of one manifest document, collected where the checks find them.

Each check of `_entities`, `_names`, `_traffic` and `_endpoint` reports to one `Findings`
instead of raising, so that every problem of a document is shown at once, each located at its
field (file, 1-based line, field path) by the document it was read from.

Does not sort, deduplicate or raise the problems: `declare.manifests` does, per project.
"""

from __future__ import annotations

from collections.abc import Iterable

from declare.errors import LocatedError

from ._source import Document, FieldPath


class Findings:
    """The problems found so far in `doc`, in the order they were found."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[LocatedError] = []

    def report(self, path: FieldPath, message: str) -> None:
        """One problem at the field `path` of the document."""
        self.problems.append(self.doc.problem(path, message))

    def extend(self, problems: Iterable[LocatedError]) -> None:
        """Problems already located (e.g. by the JSON Schema check)."""
        self.problems.extend(problems)
