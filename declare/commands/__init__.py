"""Subcommands that live outside `declare/cli.py`, one module each.

Each module has `register(app, state_app)`, which adds its commands to the Typer apps;
`register_all` calls them in the order of `MODULES`. Shared CLI helpers (error mapping,
duration parsing, confirmation) stay in `declare.cli`.
"""

from __future__ import annotations

import importlib

import typer

MODULES: tuple[str, ...] = ("fmt", "graph", "importer", "state_transfer")


def register_all(app: typer.Typer, state_app: typer.Typer) -> None:
    for name in MODULES:
        module = importlib.import_module(f"declare.commands.{name}")
        module.register(app, state_app)
