"""Fixtures shared by the unit tests: the CLI run in this process."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from declare.cli import main
from providers.fake import reset_worlds
from tests.fakes import FakeClock, FakeProbe, reset_gateways
from tests.unit.fake_world import World


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def declare_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Ran]:
    """Run `declare ARGS...` in this process, through `main()` and its error mapping."""

    def run(*args: str, cwd: Path | None = None, stdin: str = "") -> Ran:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["declare", *args])
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main()
        out = capsys.readouterr()
        code = info.value.code
        return Ran(code if isinstance(code, int) else 1, out.out, out.err)

    return run


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A project whose boundaries are all in memory (tests.unit.fake_world)."""
    reset_worlds()
    reset_gateways()
    knobs: dict[str, set[str]] = {"start": set(), "build": set(), "stop": set()}
    yield World(tmp_path, FakeProbe(), FakeClock(), [], knobs)
    reset_worlds()
    reset_gateways()
