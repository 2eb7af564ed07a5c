"""What /proc shows of a forked replica: its command line and environment, rewritten in place.

A process forked from the fork server (`providers.local.forkserver`) keeps the server's
original argv and environment strings, which are what the kernel shows in
/proc/PID/cmdline and /proc/PID/environ (and so in `ps`, or to an operator grepping
/proc/*/environ for DECLARE_REPLICA_ID). `rewrite(argv, env)` writes the replica's own
command line and environment into those memory areas (arg_start..arg_end and
env_start..env_end, fields 48-51 of /proc/self/stat), NUL-padded, the way setproctitle does.
The areas do not grow: the fork server is started with room to spare (a last argument of
blanks, `ROOM_ARGUMENT`, and `ROOM_VARIABLE` in its environment), and what does not fit is
left out and reported.

Call it only after `os.environ` was replaced (so that no libc pointer still points into the
old strings). What it does not do: change `sys.argv` or `os.environ` (the caller does), or
anything on another system than Linux.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ROOM_ARGUMENT", "ROOM_VARIABLE", "rewrite", "room_value"]

# The fork server's last argument: blanks, room for its replicas' command lines.
ROOM_ARGUMENT = " " * 512
# Set to `room_value()` in the fork server's environment: room for its replicas' environments.
ROOM_VARIABLE = "DECLARE_FORKSERVER_ROOM"
_ROOM_BYTES = 64 * 1024


def room_value() -> str:
    return "-" * _ROOM_BYTES


def _areas() -> tuple[tuple[int, int], tuple[int, int]]:
    raw = Path("/proc/self/stat").read_text()
    fields = raw[raw.rfind(")") + 2 :].split()  # fields[0] is field 3
    arg_start, arg_end, env_start, env_end = (int(fields[n - 3]) for n in (48, 49, 50, 51))
    return (arg_start, arg_end), (env_start, env_end)


def _fill(area: tuple[int, int], items: Sequence[bytes]) -> int:
    """Write as many whole NUL-terminated `items` as fit into `area`; how many did."""
    start, end = area
    size = end - start
    if size <= 0:
        return 0
    data = b""
    count = 0
    for item in items:
        if len(data) + len(item) + 1 > size - 1:  # keep the area's last byte a NUL
            break
        data += item + b"\0"
        count += 1
    ctypes.memmove(start, data.ljust(size, b"\0"), size)
    return count


def rewrite(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Show `argv` and `env` in /proc/self/{cmdline,environ}; the names of what did not fit."""
    args, environ = _areas()
    arg_items = [a.encode("utf-8", "surrogateescape") for a in argv]
    env_items = [f"{k}={v}".encode("utf-8", "surrogateescape") for k, v in env.items()]
    left_out: list[str] = []
    shown = _fill(args, arg_items)
    if shown < len(arg_items):
        left_out.append(f"{len(arg_items) - shown} command-line arguments")
    shown = _fill(environ, env_items)
    left_out.extend(list(env)[shown:])
    return left_out
