"""The paths of MLflow's scoring server, answered as `mlflow models serve` answers them.

`Scoring(model, ...)` is the `declare.serve.http` handler for one loaded pyfunc model:

    GET  /ping, /health   200, "\\n" (application/json)
    GET  /version         200, MLflow's version
    POST /invocations     MLflow's own `scoring_server.invocations(...)` on the body and its
                          Content-Type, run in a thread; an MlflowException it raises answers
                          its JSON (`serialize_as_json`) with its HTTP status; any other
                          exception 500 "Internal Server Error" (as Starlette answers it)
    another method        405 {"detail":"Method Not Allowed"} with Allow (as FastAPI)
    a known path + "/"    307 to the path without the slash (Starlette's redirect_slashes)
    another path          404 {"detail":"Not Found"}; FastAPI's own /docs, /redoc and
                          /openapi.json pages are not served either

Every request is bounded by MLflow's `MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT` (504 "Request
processing time exceeded limit", as MLflow's middleware answers). Parsing, prediction and
serialization are MLflow's functions, called as MLflow's server calls them, so the answers are
the same by construction; the differential test (tests/integration/test_serve_parity.py)
checks it against a running `mlflow models serve`.

Before that, a request that `declare.serve.direct` can answer the short way (a scikit-learn
model, numbers for its double columns) is answered so. With `max_batch_size` (opt-in
micro-batching), such requests, and those a `Joiner` (`declare.serve.joining`) can join, go
through a `Batcher` (`declare.serve.batching`): one predict call for several requests. Every
request that neither takes, and every one whose short way or join did not work out, is
answered alone by MLflow's code as above.

    async def close(self) -> None  (on shutdown: waiting callers cancelled, counts logged)

What it does not do: load the model, listen, or decide what may be joined.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import traceback
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from declare.serve.batching import Batcher
from declare.serve.body import json_object
from declare.serve.direct import Direct
from declare.serve.http import Request, Response
from declare.serve.joining import Candidate, Joiner

__all__ = ["Rows", "Scoring"]

_JSON = "application/json"
_PATHS = {"/ping": "GET", "/health": "GET", "/version": "GET", "/invocations": "POST"}
_NOT_FOUND = Response(404, b'{"detail":"Not Found"}', _JSON)
_TIMEOUT = Response(504, b"Request processing time exceeded limit", _JSON)
_INTERNAL = Response(500, b"Internal Server Error", "text/plain; charset=utf-8")
_PING = Response(200, b"\n", _JSON)


@dataclass(frozen=True, slots=True)
class Rows:
    """A request for the short way (`declare.serve.direct`), as the Batcher holds it."""

    rows: list[list[Any]]
    key: Hashable = ("direct",)

    @property
    def size(self) -> int:
        return len(self.rows)


def _media_type(mimetype: str) -> str:
    """The Content-Type Starlette sends for `media_type=mimetype`."""
    if mimetype.startswith("text/") and "charset=" not in mimetype.lower():
        return f"{mimetype}; charset=utf-8"
    return mimetype


class Scoring:
    """The handler for one model (see the module's docstring)."""

    def __init__(
        self,
        model: Any,
        timeout_seconds: float,
        executor: concurrent.futures.Executor,
        direct: Direct | None = None,
        joiner: Joiner | None = None,
        max_batch_size: int | None = None,
        max_delay_ms: float = 2.0,
    ) -> None:
        # MLflow's module as a value: its functions are untyped and called as MLflow calls them.
        import mlflow.pyfunc.scoring_server as scoring_server
        from mlflow.exceptions import MlflowException
        from mlflow.version import VERSION

        self._server: Any = scoring_server
        self._mlflow_exception: type[Exception] = MlflowException
        self._model = model
        self._input_schema = model.metadata.get_input_schema()
        self._timeout = timeout_seconds
        self._executor = executor
        self._direct = direct
        self._joiner = joiner
        self._batcher: Batcher[Rows | Candidate, bytes | None] | None = None
        if max_batch_size is not None and (direct is not None or joiner is not None):
            self._batcher = Batcher(
                self.run_batch,
                key=lambda item: item.key,
                size=lambda item: item.size,
                max_batch_size=max_batch_size,
                max_delay_ms=max_delay_ms,
                executor=executor,
            )
        self._version = Response(200, VERSION.encode(), _JSON)

    async def __call__(self, request: Request) -> Response:
        try:
            return await asyncio.wait_for(self._route(request), self._timeout)
        except TimeoutError:
            return _TIMEOUT

    async def _route(self, request: Request) -> Response:
        method = _PATHS.get(request.path)
        if method is None:
            return self._redirect(request)
        if request.method != method:
            return Response(405, b'{"detail":"Method Not Allowed"}', _JSON, (("allow", method),))
        if method == "POST":
            return await self._invocations(request)
        return self._version if request.path == "/version" else _PING

    @staticmethod
    def _redirect(request: Request) -> Response:
        """Starlette's `redirect_slashes`: a known path with a trailing slash gets a 307 to the
        path without it (any method); anything else 404."""
        path = request.path
        if path == "/" or not path.endswith("/") or path[:-1] not in _PATHS:
            return _NOT_FOUND
        host = request.headers.get("host", "")
        target = path[:-1] + (f"?{request.query}" if request.query else "")
        return Response(307, b"", "", (("location", f"http://{host}{target}"),))

    async def _invocations(self, request: Request) -> Response:
        body, content_type = request.body, request.headers.get("content-type")
        direct, joining = self._direct, self._joiner is not None and self._batcher is not None
        data = json_object(body, content_type) if direct is not None or joining else None
        if direct is not None and direct.enabled:
            rows = direct.rows(data)
            if rows is not None:
                return await self._short_way(direct, rows, body, content_type)
        if self._joiner is not None and self._batcher is not None:
            candidate = self._joiner.candidate(data)
            if candidate is not None:
                joined = await self._batcher.submit(candidate)
                if joined is not None:
                    return Response(200, joined, _JSON)
        return await self._alone(body, content_type)

    async def _short_way(
        self, direct: Direct, rows: list[list[Any]], body: bytes, content_type: str | None
    ) -> Response:
        try:
            if self._batcher is not None and len(rows) < self._batcher.max_batch_size:
                answer = await self._batcher.submit(Rows(rows))
            else:
                loop = asyncio.get_running_loop()
                answers = await loop.run_in_executor(self._executor, direct.answer, [rows])
                answer = answers[0]
        except Exception as exc:  # the estimator raised: MLflow's way says what to answer
            response = await self._alone(body, content_type)
            if response.status == 200:
                direct.turn_off(exc)
            return response
        if answer is None:
            return await self._alone(body, content_type)
        return Response(200, answer, _JSON)

    def run_batch(self, items: Sequence[Rows | Candidate]) -> Sequence[bytes | None]:
        """The Batcher's call: one predict for items of one key (in the executor)."""
        first = items[0]
        if isinstance(first, Rows):
            assert self._direct is not None
            return self._direct.answer([item.rows for item in items if isinstance(item, Rows)])
        assert self._joiner is not None
        return self._joiner.run([item for item in items if isinstance(item, Candidate)])

    async def _alone(self, body: bytes, content_type: str | None) -> Response:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.invoke_alone, body, content_type)

    def invoke_alone(self, body: bytes, content_type: str | None) -> Response:
        """What MLflow's `/invocations` answers for this body and Content-Type (in a thread)."""
        try:
            result = self._server.invocations(body, content_type, self._model, self._input_schema)
        except self._mlflow_exception as exc:
            error: Any = exc
            return Response(error.get_http_status_code(), error.serialize_as_json().encode(), _JSON)
        except Exception:
            print(traceback.format_exc(), file=sys.stderr, end="")
            return _INTERNAL
        return Response(result.status, result.response.encode(), _media_type(result.mimetype))

    async def close(self) -> None:
        """Stop batching; say in the log how many requests shared how many predict calls."""
        if self._batcher is not None:
            await self._batcher.close()
            print(
                f"declare.serve: batching joined {self._batcher.items} requests into "
                f"{self._batcher.calls} predict calls",
                file=sys.stderr,
                flush=True,
            )
