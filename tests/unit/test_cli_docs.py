"""What the README says of the CLI is what the CLI does: the `--lock-timeout` default, and
shell completion (typer's `--show-completion` / `--install-completion`) that really completes."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import typer

from declare.cli import app

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _lock_timeout_defaults() -> dict[str, object]:
    """Every command with --lock-timeout, by its path (`plan`, `state push`), and its default."""
    found: dict[str, object] = {}

    def walk(command: object, path: str) -> None:
        for param in getattr(command, "params", []):
            if "--lock-timeout" in getattr(param, "opts", []):
                found[path] = param.default
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def test_the_readme_gives_the_lock_timeout_default_the_commands_have() -> None:
    defaults = _lock_timeout_defaults()
    assert {"plan", "apply", "destroy", "graph", "state pull", "state push"} <= set(defaults)
    (default,) = set(defaults.values())
    shown = re.findall(r"\[--lock-timeout ([^\]\s`]+)\]", README)
    assert shown and set(shown) == {default}, shown
    assert f"its default is `{default}`" in README
    assert f"The default is `{default}`: no wait" in README


def _declare(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "declare", *args],
        env={**ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _show_completion_from_bash() -> subprocess.CompletedProcess[str]:
    """`declare --show-completion` run from bash (`; true` keeps bash its parent process:
    the shell typer detects)."""
    return subprocess.run(
        ["bash", "-c", '"$0" -m declare --show-completion; true', sys.executable],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_show_completion_prints_the_bash_script_of_declare() -> None:
    result = _show_completion_from_bash()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "complete -o default -F _declare_completion declare" in result.stdout
    assert "_DECLARE_COMPLETE=complete_bash" in result.stdout
    assert "--install-completion" in _declare("--help").stdout


def test_the_completion_completes_commands_and_options() -> None:
    words = _declare(_DECLARE_COMPLETE="complete_bash", COMP_WORDS="declare pl", COMP_CWORD="1")
    assert words.stdout.split() == ["plan"], words.stderr
    options = _declare(
        _DECLARE_COMPLETE="complete_bash", COMP_WORDS="declare apply --auto", COMP_CWORD="2"
    )
    assert options.stdout.split() == ["--auto-approve"], options.stderr


def test_the_printed_script_completes_a_declare_called_by_its_path(tmp_path: Path) -> None:
    """The script `--show-completion` prints, loaded in bash, completes `<dir>/declare pl`."""
    script = tmp_path / "script.bash"
    script.write_text(_show_completion_from_bash().stdout)
    command = tmp_path / "bin" / "declare"
    command.parent.mkdir()
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m declare "$@"\n')
    command.chmod(command.stat().st_mode | stat.S_IXUSR)
    result = subprocess.run(
        [
            "bash",
            "-c",
            'source "$1"; COMP_WORDS=("$2" st); COMP_CWORD=1; _declare_completion "$2"; '
            'printf "%s\\n" "${COMPREPLY[@]}"',
            "bash",
            str(script),
            str(command),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["state", "status"]


def test_the_readme_documents_shell_completion() -> None:
    assert "declare --install-completion" in README
    assert "declare --show-completion" in README


def test_install_completion_installs_the_script_for_bash(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "-c", '"$0" -m declare --install-completion; true', sys.executable],
        env={**ENV, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "bash completion installed in" in result.stdout
    installed = (tmp_path / ".bash_completions" / "declare.sh").read_text()
    assert "complete -o default -F _declare_completion declare" in installed
    assert ".bash_completions/declare.sh" in (tmp_path / ".bashrc").read_text()
