"""Replay captured requests against a candidate entity and the one serving now.

`replay` sends each request to a replica of the serving entity and to one of the candidate
(round robin over each one's replicas, the order of the two alternating from one request to
the next so neither always goes first), times both answers, and compares them row by row
(`declare.model.agreement`). A request the serving entity does not answer 2xx is left out:
it says nothing about the candidate. The candidate failing one the serving entity answered
is an error. Sequential and bounded: each request waits at most `timeout` seconds, and
`should_stop` is asked between requests (an apply's deadline).

Sends HTTP to the replicas' URLs only; judges nothing (`declare.model.evidence.verdict`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from declare.evidence.captured import CapturedRequest
from declare.model.agreement import compare, p99
from declare.model.evidence import Evidence


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer (connection failed or timed out)
    body: bytes
    ms: float


def _send(client: httpx.Client, url: str, req: CapturedRequest) -> Answer:
    started = time.perf_counter()
    try:
        resp = client.post(
            f"{url}/invocations", content=req.body, headers={"Content-Type": req.content_type}
        )
        status, body = resp.status_code, resp.content
    except httpx.HTTPError:
        status, body = 0, b""
    return Answer(status, body, (time.perf_counter() - started) * 1000)


def replay(
    requests: Sequence[CapturedRequest],
    serving: Sequence[str],
    candidate: Sequence[str],
    tolerance: float,
    timeout: float = 30.0,
    should_stop: Callable[[], None] = lambda: None,
) -> Evidence:
    """The candidate's evidence over `requests` (serving and candidate: replica base URLs)."""
    if not serving or not candidate:
        raise ValueError("replay needs a replica of the serving entity and of the candidate")
    requests_n = errors = rows = differing = 0
    serving_ms: list[float] = []
    candidate_ms: list[float] = []
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=2.0)) as client:
        for i, req in enumerate(requests):
            should_stop()
            s_url, c_url = serving[i % len(serving)], candidate[i % len(candidate)]
            if i % 2 == 0:
                s, c = _send(client, s_url, req), _send(client, c_url, req)
            else:
                c, s = _send(client, c_url, req), _send(client, s_url, req)
            if not 200 <= s.status < 300:
                continue
            requests_n += 1
            serving_ms.append(s.ms)
            candidate_ms.append(c.ms)
            if not 200 <= c.status < 300:
                errors += 1
                continue
            agreement = compare(s.body, c.body, tolerance)
            rows += agreement.rows
            differing += agreement.differing
    return Evidence(
        requests=requests_n,
        errors=errors,
        rows=rows,
        differing=differing,
        p99_ms=p99(candidate_ms),
        serving_p99_ms=p99(serving_ms),
    )
