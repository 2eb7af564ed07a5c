"""The one place where the docker SDK's errors become declare's errors.

In the manner of httpx's `map_httpcore_exceptions`: `engine_errors(what)` is a context
manager that turns every `docker.errors.DockerException` raised in its block into a
`ProviderError` saying `what` failed and the engine's first line of explanation. The
answers that are not failures are told apart by small helpers: `found(call)` (None when
the engine answers 404: the container or image does not exist, or no longer),
`gone(call)` (True when what `call` acts on is already gone) and `in_use(call)` (True when
the engine refuses because something uses it, 409). `quietly()` ignores the SDK's
errors of best-effort steps (a log copy, a cleanup).

What it does not do: talk to an engine itself, or map errors of anything but the docker SDK
(other errors pass through unchanged).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

from declare.errors import ProviderError

__all__ = ["engine_errors", "first_line", "found", "gone", "in_use", "quietly"]

T = TypeVar("T")


def first_line(exc: BaseException) -> str:
    """The first line of what the engine (or any error) says; the error's type when empty."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def engine_errors(
    what: str, *, hint: str = "", also: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Raise `ProviderError(f"{what}: {first line}{hint}")` for a docker SDK error in the block.

    `also` names more error types mapped alike (e.g. OSError while connecting).
    """
    import docker.errors

    try:
        yield
    except (docker.errors.DockerException, *also) as exc:
        raise ProviderError(f"{what}: {first_line(exc)}{hint}") from None


def found(call: Callable[[], T]) -> T | None:
    """`call()`, or None when the engine answers that what it names does not exist (404)."""
    import docker.errors

    try:
        return call()
    except docker.errors.NotFound:
        return None


def gone(call: Callable[[], object]) -> bool:
    """Run `call`; True when the engine answers that what it acts on is already gone (404)."""

    def ran() -> bool:
        call()
        return True

    return found(ran) is None


def in_use(call: Callable[[], object]) -> bool:
    """Run `call`; True when the engine refuses it because something uses it (409 Conflict)."""
    import docker.errors

    try:
        call()
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
        return True
    return False


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Ignore docker SDK errors in the block: for best-effort steps (a log copy, a cleanup)."""
    import docker.errors

    with contextlib.suppress(docker.errors.DockerException):
        yield
