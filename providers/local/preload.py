"""What a fork server imports before it forks, and how it learns more from its replicas.

`Preloader` holds it: `preload()` imports `BASE_MODULES` (what every replica needs: MLflow's
scoring server, uvicorn with its `auto` loop and protocol modules, FastAPI, pandas), then the
modules learned before, and fills MLflow's cache of installed packages (a pure function of
them; the fork server exits when they change, see `fingerprint`). `learn(names)` queues
more after a fork, imported a few at a time between requests (`step`; one import is not
cut short, so a request may wait for it): the model's `python_function.loader_module`
(`loader_module`), and the modules a child reports it imported while loading its model
(read from its report pipe, `watch` / `read_report`); only installed code is learned
(`learnable_roots`), never the project's own files, which may change. The learned modules are
kept in `<key>.learned.json` (`Learned`), so a fork server started anew is warm at once. A module
whose import left a thread running goes to the file's "skip" list and the fork server starts
itself anew without it (a process with threads must not fork).

Every variable read through `os.environ` during these imports is kept in `read`: a replica
whose environment differs in one of them cannot be forked (`forkproto.startup_mismatch`).

What it does not do: fork, or check threads before a fork (`providers.local.forkserver`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import yaml

from providers._shared import local_source_path
from providers.local.forkchild import APP_MODULE

__all__ = [
    "BASE_MODULES",
    "Learned",
    "Preloader",
    "fingerprint",
    "learnable_roots",
    "loader_module",
    "log",
    "recording_env_reads",
]

BASE_MODULES = (
    "mlflow.pyfunc.scoring_server", "mlflow.models.flavor_backend_registry",
    "mlflow.pyfunc.backend", "mlflow.tracking.artifact_utils", "mlflow.utils.file_utils",
    "uvicorn", "uvicorn.main", "uvicorn.config", "uvicorn.server", "uvicorn.loops.auto",
    "uvicorn.loops.uvloop", "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.auto", "uvicorn.lifespan.on", "uvloop", "httptools",
    "fastapi", "pandas",
)  # fmt: skip
_NEVER_LEARNED = ("__main__", "__mp_main__", APP_MODULE, "providers", "declare")


def log(message: str) -> None:
    """One line of the fork server's own log (its stderr)."""
    print(f"[forkserver {os.getpid()}] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr)


@contextlib.contextmanager
def recording_env_reads() -> Iterator[set[str]]:
    """The names of the variables read through os.environ inside the block."""
    read: set[str] = set()
    environ = os.environ
    original = type(environ)

    class Recording(original):  # type: ignore[valid-type, misc]
        def __getitem__(self, key: str) -> str:
            if isinstance(key, str):
                read.add(key)
            return str(super().__getitem__(key))

        def __contains__(self, key: object) -> bool:
            if isinstance(key, str):
                read.add(key)
            return bool(super().__contains__(key))

    environ.__class__ = Recording
    try:
        yield read
    finally:
        environ.__class__ = original


def import_all(names: Iterable[str]) -> list[str]:
    """Import each of `names` that imports cleanly; the ones that did."""
    done = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a module that fails here is imported by the replica itself
            log(f"not preloaded: {name} ({type(exc).__name__}: {exc})")
        else:
            done.append(name)
    return done


def fingerprint(paths: Iterable[str]) -> str:
    """Changes when a package is installed or removed, or this provider's code changes."""
    digest = hashlib.sha256()
    files = [*paths, *sorted(str(p) for p in Path(__file__).parent.glob("*.py"))]
    for entry in files:
        with contextlib.suppress(OSError):
            st = os.stat(entry)
            digest.update(f"{entry}\0{st.st_mtime_ns}\0{st.st_size}\0".encode())
    return digest.hexdigest()


def learnable_roots() -> tuple[str, ...]:
    """Installed code: the standard library and site-packages (not the project's own files)."""
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    roots = {sysconfig.get_paths()[n] for n in names}
    roots |= {p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}
    return tuple(sorted(r.rstrip("/") + "/" for r in roots))


def loader_module(source: str) -> str | None:
    """The model's `python_function.loader_module`, or None (no such flavor or MLmodel)."""
    try:
        mlmodel = yaml.safe_load((local_source_path(source) / "MLmodel").read_text())
        flavor = mlmodel["flavors"]["python_function"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    module = flavor.get("loader_module") if isinstance(flavor, dict) else None
    return module if isinstance(module, str) and module else None


class Learned:
    """The learned-modules file of one fork server: modules to preload, modules to avoid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.modules: list[str] = []
        self.skip: set[str] = set()
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(path.read_text())
            self.modules = [str(m) for m in data.get("modules", [])]
            self.skip = {str(m) for m in data.get("skip", [])}

    def add(self, modules: Iterable[str]) -> None:
        known = set(self.modules)
        self.modules.extend(m for m in modules if m not in known)
        self._save()

    def add_skip(self, modules: Iterable[str]) -> None:
        self.skip.update(modules)
        self.modules = [m for m in self.modules if m not in self.skip]
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps({"modules": self.modules, "skip": sorted(self.skip)}))
            os.replace(tmp, self.path)


class Preloader:
    """What one fork server imported: the learned file, the variables read, pending reports.

    `restart(why)` is called (and does not return) when an import left a thread running.
    """

    def __init__(self, learned_path: Path, restart: Callable[[str], None]) -> None:
        self.learned = Learned(learned_path)
        self.restart = restart
        self.read: set[str] = set()  # variables read at import, compared before each fork
        self.reports: dict[int, bytearray] = {}  # read end of a child's report pipe -> data
        self.queue: list[str] = []  # modules to learn, imported a few at a time (`step`)
        self.imported: list[str] = []  # learned since the file was last written

    def preload(self) -> None:
        """Import the base and learned modules and warm MLflow's package map."""
        learned = [m for m in self.learned.modules if m not in self.learned.skip]
        with recording_env_reads() as read:
            import_all(BASE_MODULES)
            import_all(learned)
            with contextlib.suppress(Exception):
                requirements = importlib.import_module("mlflow.utils.requirements_utils")
                requirements._init_modules_to_packages_map()
        self.read |= read
        if threading.active_count() > 1 and learned:
            self.learned.add_skip(learned)
            self.restart("a learned module started a thread")

    def learn(self, names: Iterable[str]) -> None:
        """Queue those of `names` that are new and may be learned (see the module doc)."""
        queued = set(self.queue)
        for name in dict.fromkeys(names):
            if (
                name
                and name not in sys.modules
                and name not in queued
                and name not in self.learned.skip
                and not name.startswith(_NEVER_LEARNED)
            ):
                self.queue.append(name)
                queued.add(name)

    def step(self, budget_seconds: float = 0.05) -> None:
        """Import queued modules for about `budget_seconds` (requests are served between)."""
        deadline = time.monotonic() + budget_seconds
        batch: list[str] = []
        with recording_env_reads() as read:
            while self.queue and time.monotonic() < deadline:
                name = self.queue.pop(0)
                if name not in sys.modules:
                    batch.append(name)
                    self.imported.extend(import_all([name]))
        self.read |= read
        if threading.active_count() > 1:
            self.learned.add_skip(batch)
            self.restart(f"learning {', '.join(batch)} started a thread")
        if not self.queue and self.imported:
            self.learned.add(self.imported)
            log(f"learned {len(self.imported)} modules")
            self.imported = []

    def watch(self, fd: int) -> None:
        """Read a child's report from `fd` (the read end of its pipe) as it comes."""
        self.reports[fd] = bytearray()

    def read_report(self, fd: int) -> None:
        """Read what `fd` has; at its end, learn the modules it named."""
        chunk = b""
        with contextlib.suppress(OSError):
            chunk = os.read(fd, 1 << 16)
        if chunk:
            self.reports[fd] += chunk
            return
        data = bytes(self.reports.pop(fd))
        os.close(fd)
        with contextlib.suppress(ValueError):
            names = json.loads(data or b"[]")
            if isinstance(names, list):
                self.learn(str(n) for n in names)

    def close_reports(self) -> None:
        """In a child: close the read ends of the other children's reports."""
        for fd in self.reports:
            with contextlib.suppress(OSError):
                os.close(fd)
