"""`declare logs` through the real CLI on a real project (local provider, MLflow registry):
the log of a replica whose first apply failed, a replaced replica's kept log marked stopped,
`--follow` printing a line written after it began, the project folder as the last argument,
and an unknown endpoint's error. Each test is bounded and destroys what it applied."""

from __future__ import annotations

import signal
import subprocess
import time

from tests.support import CliProject, manifest


def test_a_failed_first_apply_leaves_the_replicas_log_for_logs(cli_project: CliProject) -> None:
    cli_project.write(manifest("broken", "1"))
    failed = cli_project.declare("apply", "--auto-approve")
    assert failed.returncode == 1, failed.stdout + failed.stderr

    shown = cli_project.declare("logs", "iris")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "RuntimeError: model cannot load" in shown.stdout
    assert "stopped at" in shown.stdout
    assert "has no replica of None" not in shown.stdout + shown.stderr

    # Of the served entity alone, too (ENDPOINT ENTITY PROJECT_DIR).
    one = cli_project.declare("logs", "iris", "broken-1")
    assert one.returncode == 0, one.stdout + one.stderr
    assert "RuntimeError: model cannot load" in one.stdout


def test_a_replaced_replicas_log_is_shown_as_stopped(cli_project: CliProject) -> None:
    cli_project.write(manifest("iris", "1"))
    first = cli_project.declare("apply", "--auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    (old,) = cli_project.state()["endpoints"]["iris"]["replicas"]
    cli_project.write(manifest("iris", "2"))
    second = cli_project.declare("apply", "--auto-approve")
    assert second.returncode == 0, second.stdout + second.stderr

    # The old entity has no replica now: its kept log is shown, marked stopped.
    shown = cli_project.declare("logs", "iris", "iris-1", "--tail", "5")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"==> {old['handle']['id']} (iris-1), stopped at " in shown.stdout
    assert "declare.serve: serving" in shown.stdout

    # The whole endpoint: its running replica, under the plain header.
    (new,) = cli_project.state()["endpoints"]["iris"]["replicas"]
    running = cli_project.declare("logs", "iris")
    assert running.returncode == 0, running.stdout + running.stderr
    assert f"==> {new['handle']['id']} (iris-2) <==" in running.stdout


def test_follow_prints_the_lines_a_request_causes(cli_project: CliProject) -> None:
    # MLflow's own scoring server logs every request (uvicorn's access log).
    (cli_project.folder / "declare.yaml").write_text(
        (cli_project.folder / "declare.yaml").read_text()
        + "providers:\n  local:\n    server: mlflow\n"
    )
    cli_project.write(manifest("iris", "1"))
    applied = cli_project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr

    with subprocess.Popen(
        cli_project.argv("logs", "iris", "--tail", "1", "--follow", "--follow-seconds", "3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_project.env(),
    ) as follower:
        assert follower.stdout is not None
        first = follower.stdout.readline()  # the replica's header: it reads the logs now
        assert cli_project.predict().status_code == 200
        out, errors = follower.communicate(timeout=30)
        out = first + out
    assert follower.returncode == 0, out + errors
    assert "POST /invocations" in out, out
    assert "Traceback" not in errors

    # Unbounded, it ends at Ctrl-C (SIGINT to the process this test started), exit 0.
    with subprocess.Popen(
        cli_project.argv("logs", "iris", "-f"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_project.env(),
    ) as unbounded:
        assert unbounded.stdout is not None
        unbounded.stdout.readline()  # it printed: past its imports, showing or following
        time.sleep(1.0)
        unbounded.send_signal(signal.SIGINT)
        out, errors = unbounded.communicate(timeout=30)
    assert unbounded.returncode == 0, out + errors
    assert "Traceback" not in errors


def test_an_unknown_endpoint_says_so_and_lists_the_known(cli_project: CliProject) -> None:
    cli_project.write(manifest("iris", "1"))
    applied = cli_project.declare("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    shown = cli_project.declare("logs", "nope")
    assert shown.returncode == 1
    assert "no endpoint 'nope'" in shown.stderr
    assert "endpoints: iris" in shown.stderr
    assert "Traceback" not in shown.stderr
    entity = cli_project.declare("logs", "iris", "nope-1")
    assert entity.returncode == 1
    assert "has no served entity 'nope-1'; known: iris-1" in entity.stderr
    assert entity.stdout == ""
    # The deprecated -C still names the project folder.
    old = cli_project.cli("logs", "iris", "-C", str(cli_project.folder), "--tail", "3")
    assert old.returncode == 0, old.stdout + old.stderr
