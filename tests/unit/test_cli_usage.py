"""Usage errors of the CLI itself: a clear message and exit code 2, never a traceback, with
the typer installed here (0.29+ raises its vendored click's errors) and with click's own
errors (what typer before 0.29 raises)."""

from __future__ import annotations

from collections.abc import Callable

import click
import pytest

from declare import cli
from tests.unit.conftest import Ran


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("aply",), "No such command 'aply'. Did you mean 'apply'?"),
        (("plan", "--bogus"), "No such option: --bogus"),
        (("logs",), "Missing argument"),
        (("apply", "--parallelism", "many"), "Invalid value for '--parallelism'"),
    ],
)
def test_a_usage_error_says_what_and_exits_2(
    args: tuple[str, ...], says: str, declare_cli: Callable[..., Ran]
) -> None:
    result = declare_cli(*args)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("args", [("-h",), ("--help",), ("plan", "-h"), ("state", "-h")])
def test_help_is_shown_for_h_and_help(
    args: tuple[str, ...], declare_cli: Callable[..., Ran]
) -> None:
    result = declare_cli(*args)
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_a_group_without_its_subcommand_shows_its_help(declare_cli: Callable[..., Ran]) -> None:
    result = declare_cli("state")
    assert "Traceback" not in result.stderr
    assert "Commands" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "error",
    [click.exceptions.UsageError("bad usage from click"), click.exceptions.BadParameter("bad")],
)
def test_clicks_own_usage_errors_are_caught_too(
    error: click.ClickException, monkeypatch: pytest.MonkeyPatch, declare_cli: Callable[..., Ran]
) -> None:
    def raise_it(**kwargs: object) -> None:
        raise error

    monkeypatch.setattr(cli, "app", raise_it)
    result = declare_cli("plan")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert error.format_message() in result.stderr


def test_an_abort_from_either_click_is_a_message(
    monkeypatch: pytest.MonkeyPatch, declare_cli: Callable[..., Ran]
) -> None:
    for abort in cli._exception_types("Abort"):

        def raise_it(abort: type[BaseException] = abort, **kwargs: object) -> None:
            raise abort()

        monkeypatch.setattr(cli, "app", raise_it)
        result = declare_cli("apply")
        assert result.returncode == 1 and result.stderr.strip() == "Aborted."
    assert click.exceptions.Abort in cli._exception_types("Abort")
