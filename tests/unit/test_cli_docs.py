"""What the README says of the CLI is what the CLI does: the `--lock-timeout` default."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from declare.cli import app

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


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
