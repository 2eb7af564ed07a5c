"""The lock: constraints.txt pins every third-party package an install brings, within the
ranges of pyproject.toml; scripts/setup installs with it (and again when it changes);
scripts/lock writes it from a fresh virtualenv. The scripts run for real, with a fake
`python` that records what pip was asked (no package index, no change to any venv)."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "constraints.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = PIN.match(line)
        assert m, f"constraints.txt: {line!r} is not an exact pin NAME==VERSION"
        pins[canonicalize_name(m[1])] = m[2]
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    ]


def test_constraints_pin_every_requirement_inside_the_pyproject_range() -> None:
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req}"
        )


def test_constraints_hold_only_third_party_pins() -> None:
    pins = _pins()
    assert not {"declare", "pip", "setuptools"} & set(pins)
    text = CONSTRAINTS.read_text()
    assert "/" not in "".join(line for line in text.splitlines() if not line.startswith("#"))


def _installed_closure() -> dict[str, str]:
    """What `pip install -e '.[dev]'` brought into this environment: declare's requirements
    with the dev extra, and theirs, as installed (name -> version)."""
    dists = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
    extras_of: dict[str, set[str]] = {}
    todo: list[tuple[str, set[str]]] = [("declare", {"dev"})]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in extras_of and extras <= extras_of[key]:
            continue
        extras_of[key] = extras_of.get(key, set()) | extras
        for text in dists[key].requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in ["", *extras_of[key]]
            )
            if wanted:
                todo.append((req.name, set(req.extras)))
    del extras_of["declare"]
    return {name: dists[name].version for name in extras_of}


def test_constraints_cover_every_package_the_install_brings() -> None:
    installed = _installed_closure()
    missing = sorted(set(installed) - set(_pins()))
    assert not missing, f"installed with declare but not in constraints.txt: {missing}"


# -- the scripts, with a fake python ---------------------------------------------------------

FAKE_PYTHON = """#!/bin/sh
# A stand-in for python: records its arguments; `-m venv DIR` makes DIR/bin/python (itself);
# `pip freeze` prints two pins; the version checks pass.
echo "ran: $* (PIP_CONSTRAINT=${PIP_CONSTRAINT-unset})" >> "$FAKE_LOG"
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
  "-m pip") [ "$3" = freeze ] && printf 'alpha==1.0\\nbeta==2.0\\n' ;;
  "-c import platform"*) echo 3.11.7 ;;
esac
exit 0
"""


def _checkout(tmp_path: Path, script: str) -> Path:
    """A copy of the repository's `script` with pyproject.toml and constraints.txt."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / script, root / "scripts" / script)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(CONSTRAINTS, root / "constraints.txt")
    return root


def _fake_python(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE_PYTHON)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _run(root: Path, script: str, log: Path, python: Path | str, **env: str) -> list[str]:
    """Run `scripts/<script>` in `root`; the lines the fake python recorded by this run."""
    before = log.read_text().splitlines() if log.exists() else []
    result = subprocess.run(
        ["bash", str(root / "scripts" / script)],
        env={"PATH": os.environ["PATH"], "FAKE_LOG": str(log), "PYTHON": str(python), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines()[len(before) :] if log.exists() else []


def test_setup_installs_with_the_constraints_and_again_when_they_change(tmp_path: Path) -> None:
    root = _checkout(tmp_path, "setup")
    _fake_python(root / ".venv" / "bin" / "python")
    log = tmp_path / "log"
    first = _run(root, "setup", log, sys.executable)
    assert "ran: -m pip install --quiet -c constraints.txt -e .[dev] (PIP_CONSTRAINT=unset)" in (
        first
    )
    assert _run(root, "setup", log, sys.executable) == []  # nothing changed: no install

    stamp = (root / ".venv" / ".declare-installed").stat().st_mtime
    os.utime(root / "constraints.txt", (stamp + 5, stamp + 5))  # a new lock, e.g. a pull
    again = _run(root, "setup", log, sys.executable)
    assert any("-c constraints.txt -e .[dev]" in line for line in again), again


def test_lock_writes_the_freeze_of_a_fresh_venv_and_removes_it(tmp_path: Path) -> None:
    root = _checkout(tmp_path, "lock")
    log = tmp_path / "log"
    python = _fake_python(tmp_path / "bin" / "python3")
    ran = _run(root, "lock", log, python, PIP_CONSTRAINT=str(root / "constraints.txt"))
    (venv_line,) = [line for line in ran if line.startswith("ran: -m venv ")]
    venv = Path(venv_line.split()[3])
    assert not venv.exists()  # the temporary virtualenv is gone
    assert "ran: -m pip install --quiet -e .[dev] (PIP_CONSTRAINT=unset)" in ran
    assert (
        "ran: -m pip freeze --exclude-editable --exclude declare --exclude pip --exclude "
        "setuptools --exclude wheel (PIP_CONSTRAINT=unset)"
    ) in ran
    lines = (root / "constraints.txt").read_text().splitlines()
    assert [x for x in lines if not x.startswith("#")] == ["alpha==1.0", "beta==2.0"]
    assert any("Python 3.11.7" in x for x in lines if x.startswith("#"))
    assert not (root / "constraints.txt.new").exists()


@pytest.mark.parametrize("script", ["setup", "lock"])
def test_the_readme_tells_how_the_lock_is_used(script: str) -> None:
    readme = (REPO / "README.md").read_text()
    development = readme[readme.index("## Development") :]
    assert f"scripts/{script}" in development and "constraints.txt" in development
