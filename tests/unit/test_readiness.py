"""Readiness failures keep their cause: the exception of the replica's last tracebacks is in
the message however long the log, and an error answer is named by MLflow's message."""

from __future__ import annotations

import json

import pytest

from declare.errors import ReplicaFailedError
from declare.model import ReplicaHandle
from declare.readiness import TAIL_LINES, _answer, await_ready, causes

HANDLE = ReplicaHandle("jokes-jokes-abc123", "local", "jokes", "jokes", "g1", "http://127.0.0.1:9")
TRACEBACK = """\
Traceback (most recent call last):
  File "/env/lib/python3.11/site-packages/mlflow/pyfunc/model.py", line 1450, in load
    python_model.load_context(context=context)
  File "/models/jokes_model.py", line 9, in load_context
    import pyjokes
ModuleNotFoundError: No module named 'pyjokes'
declare.serve: cannot load the model /models/jokes
"""


def _long_log() -> str:
    noise = "".join(f"2026-12-04 INFO mlflow: a line of noise {i}\n" for i in range(300))
    return "starting\n" + TRACEBACK + noise


def test_a_dead_replica_names_the_exception_even_when_the_log_is_long() -> None:
    log = _long_log()
    assert "pyjokes" not in "\n".join(log.splitlines()[-TAIL_LINES:])
    with pytest.raises(ReplicaFailedError) as failed:
        await_ready(
            HANDLE,
            None,
            lambda: (False, "process 4242 exited"),
            lambda: log,
            timeout_seconds=5,
        )
    message = str(failed.value)
    assert "cause: ModuleNotFoundError: No module named 'pyjokes'" in message
    assert "a line of noise 299" in message  # the tail is still shown
    assert "a line of noise 0\n" not in message  # but not the whole log


def test_a_cause_already_in_the_tail_is_not_repeated() -> None:
    with pytest.raises(ReplicaFailedError) as failed:
        await_ready(HANDLE, None, lambda: (False, ""), lambda: TRACEBACK, timeout_seconds=5)
    message = str(failed.value)
    assert message.count("No module named 'pyjokes'") == 1
    assert "cause:" not in message


def test_causes_are_the_final_lines_of_the_last_tracebacks() -> None:
    chained = TRACEBACK + (
        "\nThe above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        '  File "main.py", line 3, in <module>\n'
        "    raise RuntimeError('model cannot load')\n"
        "RuntimeError: model cannot load\n"
    )
    assert causes(chained) == [
        "ModuleNotFoundError: No module named 'pyjokes'",
        "RuntimeError: model cannot load",
    ]
    assert causes("ok\nValueError: bad input\nbye\n") == ["ValueError: bad input"]
    assert causes("nothing wrong here\n") == []


def test_an_error_answer_is_named_by_mlflows_message_and_its_exception() -> None:
    body = json.dumps(
        {
            "error_code": "BAD_REQUEST",
            "message": "Failed to predict " + "x" * 1000,
            "stack_trace": "Traceback (most recent call last):\n  File ...\n"
            "KeyError: 'petal width'\n",
        }
    )
    answer = _answer(body)
    assert answer.startswith("Failed to predict") and answer.endswith("(KeyError: 'petal width')")
    assert _answer("plain text " * 100) == ("plain text " * 100)[:500]
