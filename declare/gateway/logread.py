"""Reading a replica's log where the routing table says it is: a file, or a Docker engine.

    read_source(source, lines, max_bytes)   the last `lines` lines of the log that a
                                            `LogSource` names, at most `max_bytes` bytes
    file_tail(path, lines, max_bytes)       a file's tail (blocking: run it off the loop)
    demultiplex(data)                       Docker's multiplexed log stream as plain bytes

A file is read in a worker thread (`asyncio.to_thread`), never on the event loop. A
container's log is asked of the engine's HTTP API (`GET /containers/{id}/logs?stdout=1&
stderr=1&tail=N`) with aiohttp, over its unix socket or plain TCP, never the docker SDK (the
gateway may not import it). A container without a TTY sends its output as frames: an 8-byte
header (the stream: 0 stdin, 1 stdout, 2 stderr; three zero bytes; the payload's length, big
endian) and the payload; `demultiplex` joins the payloads in order.

What cannot be read (no such file, an engine that does not answer or is reached over SSH or
TLS) raises `LogUnavailable` with a sentence saying why. Nothing here knows endpoints,
entities or HTTP responses (`served_logs.py`).
"""

from __future__ import annotations

import asyncio
import os
import struct
import urllib.parse
from pathlib import Path

import aiohttp

from declare.model.logs import LogSource

__all__ = ["LogUnavailable", "demultiplex", "file_tail", "read_source"]

ENGINE_TIMEOUT_SECONDS = 10.0
_HEADER = struct.Struct(">BxxxL")  # stream type, 3 zero bytes, payload length (big endian)
_STREAMS = (0, 1, 2)


class LogUnavailable(Exception):
    """The log cannot be read here; the message says why (one sentence)."""


def demultiplex(data: bytes) -> bytes:
    """The payloads of Docker's multiplexed stream `data`, in order. `data` that does not
    start with a frame header is a TTY container's raw stream and is returned as it is; a
    frame cut short at the end gives what it holds; bytes after a malformed header are
    dropped (they cannot be told apart from a payload)."""
    stream = Demultiplexer(keep=len(data))
    stream.feed(data)
    return stream.finish()


class Demultiplexer:
    """`demultiplex` fed chunk by chunk (as the engine sends them), keeping only the last
    `keep` bytes of the payloads: a tail is wanted, and a body may be longer than one."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._pending = bytearray()  # bytes not yet known to be header or payload
        self._out = bytearray()
        self._raw: bool | None = None  # None: too few bytes seen to tell
        self._left = 0  # payload bytes of the current frame still to come
        self._broken = False

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        if self._raw is None and len(self._pending) >= _HEADER.size:
            self._raw = not _is_header(self._pending)
        if self._raw:
            self._out += self._pending
            self._pending.clear()
        elif self._raw is False:
            self._frames()
        if len(self._out) > 2 * self.keep:
            del self._out[: len(self._out) - self.keep]

    def _frames(self) -> None:
        data = self._pending
        at = 0
        while not self._broken:
            if self._left:
                take = min(self._left, len(data) - at)
                self._out += data[at : at + take]
                self._left -= take
                at += take
                if self._left:
                    break
            if len(data) - at < _HEADER.size:
                break
            if not _is_header(data[at : at + _HEADER.size]):
                self._broken = True
                break
            _, self._left = _HEADER.unpack_from(data, at)
            at += _HEADER.size
        del data[: len(data) if self._broken else at]

    def finish(self) -> bytes:
        """The payloads' last `keep` bytes (a short stream too short to tell: as it is)."""
        if self._raw is None:
            self._out += self._pending
        return bytes(self._out[-self.keep :]) if self.keep > 0 else b""


def _is_header(data: bytes | bytearray) -> bool:
    return len(data) >= _HEADER.size and data[0] in _STREAMS and data[1:4] == b"\0\0\0"


def last_lines(data: bytes, lines: int, max_bytes: int) -> str:
    """The last `lines` lines of `data`, at most `max_bytes` bytes of it, as text."""
    if lines <= 0 or max_bytes <= 0:
        return ""
    cut = data[-max_bytes:]
    if len(cut) < len(data):  # the first line was cut: drop it
        newline = cut.find(b"\n")
        cut = cut[newline + 1 :] if newline >= 0 else cut
    text = cut.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def file_tail(path: str | Path, lines: int, max_bytes: int) -> str:
    """The last `lines` lines of the file, at most `max_bytes` bytes. Blocking."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except FileNotFoundError:
        raise LogUnavailable(f"there is no log file at {path} (yet)") from None
    except OSError as exc:
        raise LogUnavailable(f"the log file {path} cannot be read: {exc.strerror}") from None
    if size > max_bytes:  # the first line read was cut: drop it
        newline = data.find(b"\n")
        data = data[newline + 1 :] if newline >= 0 else data
    return last_lines(data, lines, max_bytes)


async def read_source(source: LogSource, lines: int, max_bytes: int) -> str:
    """The tail of the log `source` names; LogUnavailable saying why it cannot be read."""
    if source.file is not None:
        return await asyncio.to_thread(file_tail, source.file, lines, max_bytes)
    if source.engine is not None and source.container is not None:
        return await container_tail(source.engine, source.container, lines, max_bytes)
    raise LogUnavailable("the routing table names no place where this replica's log is")


def _engine_session(engine: str) -> tuple[aiohttp.ClientSession, str]:
    """A session to the engine and the base URL its API is asked at."""
    url = urllib.parse.urlsplit(engine)
    timeout = aiohttp.ClientTimeout(total=ENGINE_TIMEOUT_SECONDS)
    if url.scheme == "unix":
        connector = aiohttp.UnixConnector(path=url.path)
        return aiohttp.ClientSession(connector=connector, timeout=timeout), "http://docker"
    if url.scheme in ("tcp", "http") and url.netloc:
        return aiohttp.ClientSession(timeout=timeout), f"http://{url.netloc}"
    raise LogUnavailable(
        f"the gateway reads container logs over a unix socket or plain TCP, and the engine "
        f"is {url.scheme}://"
    )


async def container_tail(engine: str, container: str, lines: int, max_bytes: int) -> str:
    """The last `lines` lines of a container's stdout and stderr, from the engine's API."""
    session, base = _engine_session(engine)
    path = f"{base}/containers/{urllib.parse.quote(container, safe='')}/logs"
    params = {"stdout": "1", "stderr": "1", "tail": str(max(lines, 0))}
    try:
        async with session, session.get(path, params=params) as response:
            if response.status == 404:
                raise LogUnavailable(f"container {container[:12]} no longer exists on the engine")
            if response.status != 200:
                detail = (await response.text())[:200].strip()
                raise LogUnavailable(f"the engine answered {response.status}: {detail}")
            stream = Demultiplexer(keep=max_bytes + 1)  # one more: was the first line cut?
            async for chunk in response.content.iter_chunked(64 * 1024):
                stream.feed(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise LogUnavailable(
            f"the Docker engine at {engine} does not answer ({type(exc).__name__}: {exc})"
        ) from None
    return last_lines(stream.finish(), lines, max_bytes)
