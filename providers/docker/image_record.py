"""The image record, `state_dir/docker/images.json`: the images this project's replicas used.

Every image a build made or a replica started from is remembered here, so that
`prune_images()` (`declare destroy --prune-images`) removes exactly those that no container
on the engine uses any more, and forgets them. The record is rewritten atomically, under
the provider's lock.

What it does not do: build images (`providers.docker.build`), or remove images other
projects' records name while a container of theirs uses them (the engine refuses).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from declare.errors import ProviderError
from providers._shared import exclusive
from providers.docker.errors import engine_errors, gone, in_use

__all__ = ["ImageRecord"]


class ImageRecord:
    """The image tags recorded in `path`, read and written under `lock_path`."""

    def __init__(self, path: Path, lock_path: Path) -> None:
        self.path = path
        self._lock_path = lock_path

    def remember(self, tag: str) -> None:
        with exclusive(self._lock_path):
            tags = self._read()
            if tag not in tags:
                self._write([*tags, tag])

    def prune(self, client: Any) -> list[str]:
        """Remove the recorded images no container uses; return the tags removed."""
        removed: list[str] = []
        with exclusive(self._lock_path):
            keep = set()
            for tag in self._read():
                with engine_errors("cannot list containers"):
                    users = client.containers.list(all=True, filters={"ancestor": tag})
                if users:
                    keep.add(tag)
                    continue
                with engine_errors(f"cannot remove image {tag}"):
                    # 409: in use (a container appeared meanwhile)
                    if in_use(functools.partial(_remove, client, tag, removed)):
                        keep.add(tag)
            self._write(sorted(keep))
        return removed

    def _read(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ProviderError(f"unreadable image record {self.path}: {exc}") from None
        tags = data.get("images") if isinstance(data, dict) else None
        return [str(t) for t in tags] if isinstance(tags, list) else []

    def _write(self, tags: Sequence[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".images.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"images": sorted(set(tags))}, indent=2) + "\n")
        os.replace(tmp, self.path)


def _remove(client: Any, tag: str, removed: list[str]) -> None:
    """Remove image `tag` and note it in `removed`; nothing when it is already gone."""
    if not gone(lambda: client.images.remove(tag)):
        removed.append(tag)
