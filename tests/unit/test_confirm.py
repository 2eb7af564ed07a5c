"""`apply` and `destroy` without --auto-approve and without a terminal: one line is read
from stdin (`echo yes | declare apply`), `yes` approves, anything else or nothing cancels."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from declare.commands import core
from tests.unit.conftest import Ran
from tests.unit.fake_world import World

REPO = Path(__file__).resolve().parents[2]


def _demo(folder: Path) -> Path:
    (folder / "model").mkdir(exist_ok=True)
    (folder / "model" / "MLmodel").write_text("flavors: {}\n")
    (folder / "demo.yaml").write_text(
        "name: demo\nprovider: fake\nconfig:\n  served_entities:\n"
        "    - name: m\n      model_uri: ./model\n"
    )
    return folder


@pytest.fixture
def project(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """The demo project on the fake provider, opened with in-memory boundaries."""
    _demo(world.folder)
    monkeypatch.setattr(core, "open_project", lambda *args, **kwargs: world.project())
    return world


def test_a_piped_yes_approves_the_apply(project: World, declare_cli: Callable[..., Ran]) -> None:
    result = declare_cli("apply", str(project.folder), stdin="yes\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Do you want to perform these actions? declare will apply this plan." in result.stdout
    assert "cancelled" not in result.stdout
    assert list(project.state().endpoints) == ["demo"]


@pytest.mark.parametrize("answer", ["no\n", "y\n", "", "yes please\n"])
def test_any_other_answer_or_none_cancels_the_apply(
    answer: str, project: World, declare_cli: Callable[..., Ran]
) -> None:
    result = declare_cli("apply", str(project.folder), stdin=answer)
    assert result.returncode == 1
    assert "Apply cancelled." in result.stdout.splitlines()
    assert "Traceback" not in result.stdout + result.stderr
    assert not project.state().endpoints
    assert not project.provider.alive_ids()


def test_destroy_reads_its_answer_and_says_destroy_cancelled(
    project: World, declare_cli: Callable[..., Ran]
) -> None:
    assert declare_cli("apply", "--auto-approve", str(project.folder)).returncode == 0
    kept = declare_cli("destroy", str(project.folder), stdin="")
    assert kept.returncode == 1
    assert "Destroy cancelled." in kept.stdout.splitlines()
    assert "Traceback" not in kept.stdout + kept.stderr
    assert list(project.state().endpoints) == ["demo"]

    gone = declare_cli("destroy", str(project.folder), stdin="yes\n")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not project.state().endpoints


@pytest.mark.parametrize("answer", [b"no\n", None])
def test_a_real_pipe_or_closed_input_cancels_without_a_traceback(
    answer: bytes | None, tmp_path: Path
) -> None:
    """The CLI as its own process: stdin a pipe (`echo no | declare apply`) or /dev/null."""
    folder = _demo(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "declare", "apply", str(folder)],
        input=answer,
        stdin=subprocess.DEVNULL if answer is None else None,
        capture_output=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 1, out + err
    assert "Apply cancelled." in out.splitlines()
    assert "Traceback" not in out + err
    assert not (folder / "state" / "declare.tfstate.json").exists()
