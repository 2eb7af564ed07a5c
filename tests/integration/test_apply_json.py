"""`declare apply --json` / `destroy --json` as a CI job reads them: one JSON object per line,
checked against schemas/apply-events.schema.json, in order (version, plan, each action's
start before its finish, the outcome last), for a real apply on the local provider, a
version that fails to load (an action_error, undo steps, a failed outcome, exit 1), and a
destroy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from tests.support import CliProject, manifest

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "schemas" / "apply-events.schema.json").read_text()
)


def events(stdout: str) -> list[dict[str, Any]]:
    """Every line parsed on its own with json.loads, each valid against the schema."""
    validator = Draft202012Validator(SCHEMA)
    out = []
    for line in stdout.splitlines():
        event = json.loads(line)
        errors = sorted(validator.iter_errors(event), key=str)
        assert not errors, (line, [e.message for e in errors])
        out.append(event)
    return out


def check_order(stream: list[dict[str, Any]]) -> None:
    types = [e["type"] for e in stream]
    assert types[0] == "version" and types[1] == "plan" and types[-1] == "outcome"
    assert types.count("outcome") == 1 and types.count("plan") == 1
    started: set[str] = set()
    ended: set[str] = set()
    for e in stream[2:-1]:
        action = e.get("action", {}).get("id")
        if e["type"] == "action_start":
            assert action not in started
            started.add(action)
        elif e["type"] in ("action_finish", "action_error"):
            assert action in started and action not in ended
            ended.add(action)
            assert e["elapsed_seconds"] >= 0
    assert started == ended  # nothing left running at the outcome
    planned = {a["id"] for a in stream[1]["actions"]}
    assert started <= planned


def test_apply_and_destroy_stream_json_events(cli_project: CliProject) -> None:
    project = cli_project
    project.write(manifest("iris", "1"))
    refused = project.declare("apply", "--json")
    assert refused.returncode == 1 and "--json cannot ask for confirmation" in refused.stderr

    applied = project.declare("apply", "--json", "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    stream = events(applied.stdout)
    check_order(stream)
    outcome = stream[-1]
    assert outcome["ok"] and outcome["counts"] == {"add": 1, "change": 0, "destroy": 0}
    assert outcome["invocation_urls"] == {"iris": project.url}
    kinds = [e["action"]["kind"] for e in stream if e["type"] == "action_finish"]
    assert {"start-gateway", "start-replica", "await-ready", "set-routes"} <= set(kinds)
    assert project.predict().status_code == 200

    project.write(manifest("broken", "1"))
    failed = project.declare("apply", "--json", "--auto-approve")
    assert failed.returncode == 1
    stream = events(failed.stdout)
    check_order(stream)
    errors = [e for e in stream if e["type"] == "action_error"]
    assert errors and errors[0]["@level"] == "error"
    assert any(e["type"] == "undo" for e in stream)
    assert stream[-1]["ok"] is False and "UPDATE_FAILED" not in stream[-1]["@message"]
    assert stream[-1]["endpoints"][0]["error"]
    assert project.predict().status_code == 200  # v1 kept serving

    destroyed = project.declare("destroy", "--json", "--auto-approve")
    assert destroyed.returncode == 0, destroyed.stderr
    stream = events(destroyed.stdout)
    check_order(stream)
    assert stream[-1]["operation"] == "destroy" and stream[-1]["counts"]["destroy"] == 1
