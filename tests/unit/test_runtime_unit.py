"""The systemd unit of the runtime (`declare runtime unit`) and apply's hand-over to it:
systemd itself (`systemd-analyze verify`) accepts the unit, systemd's quoting gives back the
very command, and apply says what is wrong when no runtime takes over or when the unit's
environment differs from apply's."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from declare import runtime_control
from declare.config import load_config
from declare.errors import RuntimeStartError
from declare.runtime_control import ProcessRuntime, RuntimeRecord, read_record, write_record
from declare.runtime_unit import render_unit, unit_name
from tests.systemd_unit import exec_argv, parse, verify


def unit_of(folder: Path, names: tuple[str, ...] = ()) -> str:
    (folder / "declare.yaml").write_text("runtime:\n  supervisor: systemd\n")
    return render_unit(load_config(folder, {}), names, sys.executable)


def test_systemd_accepts_the_unit_and_reads_back_the_command(tmp_path: Path) -> None:
    folder = tmp_path / "my 100% project"
    folder.mkdir()
    text = unit_of(folder, ("DECLARE_SECRET_A", "MLFLOW_TRACKING_URI"))
    path = tmp_path / unit_name(load_config(folder, {}))
    path.write_text(text)
    verify(path)
    svc = parse(text)
    assert exec_argv(svc["ExecStart"]) == [
        sys.executable, "-m", "declare.runtime", "--project-dir", str(folder), "--supervised"
    ]  # fmt: skip
    assert svc["WorkingDirectory"] == str(folder)
    assert (svc["Restart"], svc["KillMode"]) == ("always", "process")
    # the variables are named for the EnvironmentFile, never given a value
    assert "#   DECLARE_SECRET_A\n" in text and "DECLARE_SECRET_A=" not in text
    assert path.name == "declare-my-100--project.service"


def test_hand_over_with_no_unit_running_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_control, "HAND_OVER_TIMEOUT_SECONDS", 0.3)
    control = ProcessRuntime(tmp_path, tmp_path / "state", "systemd")
    with pytest.raises(RuntimeStartError, match="no runtime took the endpoints over"):
        control.start("abc")
    assert control.status() is None


def test_a_refusal_names_what_differs_and_leaves_the_runtime_waiting(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    control = ProcessRuntime(
        tmp_path, state_dir, "systemd", frozenset({"DECLARE_SECRET_A", "MLFLOW_X"})
    )

    def refuse() -> None:  # what a unit's runtime with another environment writes
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            record = read_record(state_dir)
            if record is not None:
                fields = record.to_json() | {"env_hash": "other", "env_names": ["MLFLOW_X", "B"]}
                write_record(state_dir, RuntimeRecord.from_json(fields))
                return
            time.sleep(0.01)

    helper = threading.Thread(target=refuse)
    helper.start()
    with pytest.raises(RuntimeStartError) as caught:
        control.start("mine")
    helper.join()
    message = str(caught.value)
    assert "missing DECLARE_SECRET_A" in message
    assert "not in this apply's environment: B" in message
    assert "EnvironmentFile" in message
    assert control.status() is None  # the stop mark: it acts on nothing
