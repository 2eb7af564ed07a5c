"""Subcommands that live outside `declare/cli.py`, one module each.

Each module has `register(app, state_app)`, which adds its commands to the Typer apps;
`register_all` calls them in the order of `MODULES`. Shared CLI helpers (argument types,
output, duration parsing, confirmation) are in `declare.commands._common`; the error mapping
stays in `declare.cli.main`.
"""

from __future__ import annotations

import importlib

import typer

MODULES: tuple[str, ...] = (
    "core",
    "inspect",
    "logs",
    "fmt",
    "graph",
    "importer",
    "state_transfer",
    "runtime_unit",
    "query",
)


def register_all(app: typer.Typer, state_app: typer.Typer) -> None:
    for name in MODULES:
        module = importlib.import_module(f"declare.commands.{name}")
        module.register(app, state_app)
