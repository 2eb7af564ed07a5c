"""Readiness of a replica, proven by a real prediction over HTTP on loopback.

A replica is ready when `POST {url}/invocations` with the model's serving input example
answers 200 (when the model has no example: when `GET {url}/ping` answers 200). Fails fast,
with the replica's log tail, when the provider reports the replica dead, when the replica
answers the example with an error three times in a row, or at the deadline. The message keeps
the cause however long the log: the final line of each of its last tracebacks (e.g.
`ModuleNotFoundError: No module named 'pyjokes'`) comes first, then the last lines.
Provider-agnostic: liveness and logs come from the provider through two callables.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import httpx

from declare.errors import ReplicaFailedError
from declare.model import ReplicaHandle, ResolvedModel
from declare.provider import Liveness, Provider
from declare.resolve import load_input_example


def await_ready(
    handle: ReplicaHandle,
    example: tuple[str, bytes] | None,
    is_alive: Callable[[], tuple[bool, str]],
    log_tail: Callable[[], str],
    timeout_seconds: float,
    poll_seconds: float = 0.25,
) -> float:
    """Block until the replica answers; return the seconds it took. Raise ReplicaFailedError."""
    started = time.monotonic()
    deadline = started + timeout_seconds
    bad_answers = 0
    last = "no answer yet"
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=2.0)) as client:
        waits = 0
        while True:
            alive, reason = is_alive()
            if not alive:
                raise ReplicaFailedError(
                    f"replica {handle.id} ({handle.entity}) exited before it was ready"
                    f"{': ' + reason if reason else ''}\n{_tail(log_tail())}"
                )
            try:
                if example is None:
                    resp = client.get(f"{handle.url}/ping")
                else:
                    ctype, body = example
                    resp = client.post(
                        f"{handle.url}/invocations", content=body, headers={"Content-Type": ctype}
                    )
                if resp.status_code == 200:
                    return time.monotonic() - started
                bad_answers += 1
                last = f"HTTP {resp.status_code}: {_answer(resp.text)}"
                if bad_answers >= 3:
                    raise ReplicaFailedError(
                        f"replica {handle.id} ({handle.entity}) answers its input example with "
                        f"an error: {last}\n{_tail(log_tail())}"
                    )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
            if time.monotonic() >= deadline:
                raise ReplicaFailedError(
                    f"replica {handle.id} ({handle.entity}) not ready after "
                    f"{timeout_seconds:.0f} s (last: {last})\n{_tail(log_tail())}"
                )
            # a forked replica answers within a tenth of a second: look again soon at
            # first, then every `poll_seconds`
            waits += 1
            time.sleep(min(poll_seconds, 0.01 * 2**waits))


TAIL_LINES = 30  # lines of the replica's log a failure shows
LOG_LINES = 400  # lines of it searched for the cause
_TRACEBACK = "Traceback (most recent call last):"
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b.*")


def causes(log: str, most: int = 3) -> list[str]:
    """The final line of each of the log's last `most` tracebacks (the exception raised),
    oldest first; without a traceback, the last line that names an exception."""
    lines = log.splitlines()
    found: list[str] = []
    for start, line in enumerate(lines):
        if line.strip() != _TRACEBACK:
            continue
        indent = len(line) - len(line.lstrip())
        for after in lines[start + 1 :]:
            text = after[indent:] if after[:indent].strip() == "" else after
            if text and not text[0].isspace():
                if text.strip() != _TRACEBACK:
                    found.append(text.strip()[:500])
                break
    if not found:
        found = [line.strip()[:500] for line in lines if _EXCEPTION.match(line.strip())][-1:]
    return list(dict.fromkeys(found))[-most:]


def _tail(text: str) -> str:
    if not text.strip():
        return "  (its log is empty)"
    lines = text.splitlines()
    shown = lines[-TAIL_LINES:]
    missing = [c for c in causes(text) if not any(c in line for line in shown)]
    cause = "".join(f"  cause: {c}\n" for c in missing)
    return cause + "  last lines of its log:\n" + "\n".join(f"    {line}" for line in shown)


def _answer(body: str) -> str:
    """A replica's error answer in short: MLflow's `message` (and the exception its stack
    trace ends with), else the start of the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:500]
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, str):
        return body[:500]
    out = message[:500]
    trace = data.get("stack_trace")
    if isinstance(trace, str):
        out += "".join(f" ({c})" for c in causes(trace, 1) if c not in out)
    return out


class HttpProbe:
    """`declare.ports.Probe` over HTTP: the model's input example posted to the replica."""

    def await_ready(
        self, provider: Provider, handle: ReplicaHandle, model: ResolvedModel, timeout: float
    ) -> float:
        def alive() -> tuple[bool, str]:
            status = provider.status(handle)
            return status.liveness is Liveness.ALIVE, status.reason

        return await_ready(
            handle,
            load_input_example(model),
            alive,
            lambda: provider.logs(handle, LOG_LINES),
            timeout_seconds=timeout,
        )
