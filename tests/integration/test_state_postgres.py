"""The PostgreSQL state backend against a real server (started by scripts/postgres): the
state conformance suite, what only this backend has (history rows, workspaces, the lock's
database session, force-unlock of a live holder), its settings in declare.yaml,
`declare state push/pull`, and two concurrent `declare apply` runs that serialize.

The server: $DECLARE_TEST_POSTGRES_DSN when set, else the one `scripts/postgres` starts (it
installs and starts it when needed; `scripts/test` runs it first). Each test session works
in a schema of its own, dropped at the end; each test in a workspace of its own.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from declare import procs
from declare.config import load_config
from declare.errors import ConfigError, ManifestError, StateError
from declare.state import LocalStateBackend
from declare.state.postgres import PostgresStateBackend
from declare.state.select import open_backend
from tests.integration.conftest import MlflowProject
from tests.state_conformance import CHECKS, BackendFactory, check_id

REPO_ROOT = Path(__file__).resolve().parents[2]
DSN_ENV = "DECLARE_TEST_STATE_DSN"  # what the test projects' declare.yaml names


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    dsn = os.environ.get("DECLARE_TEST_POSTGRES_DSN")
    if dsn:
        return dsn
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "postgres")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        pytest.fail(f"scripts/postgres could not start the test server:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    name = f"declare_test_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def workspace() -> str:
    return f"ws-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def factory(postgres_dsn: str, pg_schema: str, workspace: str) -> BackendFactory:
    return functools.partial(PostgresStateBackend, postgres_dsn, workspace, pg_schema)


def _password(dsn: str) -> str:
    password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    assert password, "the test server's DSN has a password"
    return str(password)


def _query(dsn: str, query: sql.Composable | str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


# ---- the conformance suite -------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
def test_conformance(check: Callable[[BackendFactory], None], factory: BackendFactory) -> None:
    check(factory)


# ---- what only this backend has -------------------------------------------------------


def test_every_write_is_kept_as_a_history_row(
    factory: BackendFactory, postgres_dsn: str, pg_schema: str, workspace: str
) -> None:
    backend = factory()
    docs = [backend.write({"n": 0})]
    for n in (1, 2):
        docs.append(backend.write({**docs[-1], "n": n}))
    rows = _query(
        postgres_dsn,
        sql.SQL(
            "SELECT serial, lineage, doc::text FROM {} WHERE workspace = %s ORDER BY id"
        ).format(sql.Identifier(pg_schema, "declare_state")),
        workspace,
    )
    assert [(s, lin) for s, lin, _ in rows] == [(1, docs[0]["lineage"])] + [
        (d["serial"], d["lineage"]) for d in docs[1:]
    ]
    assert [json.loads(text) for _, _, text in rows] == docs
    assert factory().read() == docs[-1]


def test_tables_are_created_on_first_write_and_reading_creates_nothing(
    postgres_dsn: str, workspace: str
) -> None:
    schema = f"declare_fresh_{uuid.uuid4().hex[:8]}"
    exists = sql.SQL("SELECT count(*) FROM pg_namespace WHERE nspname = %s")
    try:
        backend = PostgresStateBackend(postgres_dsn, workspace, schema, "team_state")
        assert backend.read() is None and backend.lock_info() is None
        assert _query(postgres_dsn, exists, schema) == [(0,)]
        stored = backend.write({"endpoints": {}})
        tables = _query(
            postgres_dsn,
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1",
            schema,
        )
        assert tables == [("team_state",), ("team_state_lock",)]
        assert PostgresStateBackend(postgres_dsn, workspace, schema, "team_state").read() == stored
    finally:
        _query(
            postgres_dsn, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


def test_workspaces_hold_separate_states_and_locks(
    postgres_dsn: str, pg_schema: str, workspace: str
) -> None:
    team_a = PostgresStateBackend(postgres_dsn, workspace + "-a", pg_schema)
    team_b = PostgresStateBackend(postgres_dsn, workspace + "-b", pg_schema)
    a = team_a.write({"team": "a"})
    with team_a.locked("apply", 0):
        with team_b.locked("apply", 0) as b_lock:  # not blocked by team a's lock
            b = team_b.write({"team": "b"})
            assert team_b.lock_info() == b_lock
        assert a["lineage"] != b["lineage"]
    assert team_a.read() == a and team_b.read() == b


def test_messages_name_the_server_and_never_the_password(
    factory: BackendFactory, postgres_dsn: str, workspace: str
) -> None:
    holder = factory()
    with holder.locked("apply", 0) as info:
        with pytest.raises(StateError) as err:
            factory().lock("plan", 0)
        message = str(err.value)
    host, port = (psycopg.conninfo.conninfo_to_dict(postgres_dsn)[k] for k in ("host", "port"))
    assert f"{host}:{port}" in message and workspace in message and info.id in message
    assert _password(postgres_dsn) not in message
    assert _password(postgres_dsn) not in holder.location


def test_an_unreachable_server_is_a_clear_error(postgres_dsn: str) -> None:
    port = procs.free_port()  # nothing listens there
    dsn = f"postgresql://declare:secret-pw@127.0.0.1:{port}/postgres"
    backend = PostgresStateBackend(dsn, "ws")
    started = time.monotonic()
    for attempt in (backend.read, lambda: backend.lock("apply", 0)):
        with pytest.raises(StateError) as err:
            attempt()
        assert f"127.0.0.1:{port}" in str(err.value) and "secret-pw" not in str(err.value)
    assert time.monotonic() - started < 10
    wrong = postgres_dsn.replace(_password(postgres_dsn), "wrong-pw-123")
    with pytest.raises(StateError) as denied:
        PostgresStateBackend(wrong, "ws").read()
    assert "password authentication failed" in str(denied.value)
    assert "wrong-pw-123" not in str(denied.value)
    with pytest.raises(ConfigError) as bad:
        PostgresStateBackend("postgresql://x:pw@h:notaport/db?what=ever", "ws", dsn_source="X")
    assert "X is not a PostgreSQL connection string" in str(bad.value)


def test_a_run_whose_lock_was_force_unlocked_cannot_write(factory: BackendFactory) -> None:
    hung = factory()
    first = hung.write({"n": 1})
    info = hung.lock("apply", 0)
    factory().force_unlock(info.id)  # ends the hung run's lock session
    with pytest.raises(StateError) as err:
        hung.write({**first, "n": 2})
    assert "lock" in str(err.value) and "was lost" in str(err.value)
    hung.unlock(info.id)  # late: only a warning, the state is not locked
    assert factory().lock_info() is None
    assert factory().read() == first
    with factory().locked("apply", 0):  # and the state can be locked again
        pass


def test_a_damaged_state_row_names_where_earlier_states_are(
    factory: BackendFactory, postgres_dsn: str, pg_schema: str, workspace: str
) -> None:
    good = factory().write({"n": 1})
    _query(
        postgres_dsn,
        sql.SQL(
            "INSERT INTO {} (workspace, serial, lineage, doc) VALUES (%s, 2, %s, %s::json)"
        ).format(sql.Identifier(pg_schema, "declare_state")),
        workspace,
        good["lineage"],
        '{"format_version": 1, "lineage": "x"}',
    )
    with pytest.raises(StateError) as err:
        factory().read()
    message = str(err.value)
    assert "serial" in message and workspace in message
    assert f"{pg_schema}.declare_state" in message and "state push --force" in message


def test_killed_holder_with_a_waiting_locker(factory: BackendFactory) -> None:
    """A run SIGKILLed while holding the lock lets a run that is already waiting in."""
    script = (
        "import sys, time, json\n"
        "from declare.state.postgres import PostgresStateBackend\n"
        "b = PostgresStateBackend(*json.loads(sys.argv[1]))\n"
        "info = b.lock('apply', 5)\n"
        "print(info.id, flush=True)\n"
        "time.sleep(60)\n"
    )
    partial = factory
    assert isinstance(partial, functools.partial)
    holder = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(list(partial.args))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert holder.stdout is not None
        held_id = holder.stdout.readline().strip()
        assert held_id, "the holder did not lock"
        waiting = factory()
        holder_gone_at = 0.0

        def kill_soon() -> None:
            nonlocal holder_gone_at
            time.sleep(0.5)
            holder.kill()  # by PID
            holder.wait(10)
            holder_gone_at = time.monotonic()

        killer = threading.Thread(target=kill_soon)
        killer.start()
        info = waiting.lock("destroy", 20)
        got_at = time.monotonic()
        killer.join()
        assert info.replaced is not None and info.replaced.id == held_id
        assert got_at - holder_gone_at < 3, "the server released the dead run's lock promptly"
        waiting.unlock(info.id)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


# ---- settings in declare.yaml -----------------------------------------------------------


def _project(folder: Path, state: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "declare.yaml").write_text(f"project: pgtest\nstate:\n{state}{extra}")
    return folder


def test_declare_yaml_selects_the_postgres_backend(
    tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    folder = _project(
        tmp_path / "p",
        f"  backend: postgres\n  dsn_env: {DSN_ENV}\n  schema: {pg_schema}\n"
        "  table: ci_state\n  workspace: team-x\n",
    )
    backend = open_backend(load_config(folder, {}), {DSN_ENV: postgres_dsn})
    assert isinstance(backend, PostgresStateBackend)
    assert (backend.workspace, backend.schema, backend.table) == ("team-x", pg_schema, "ci_state")
    default = _project(tmp_path / "q", f"  backend: postgres\n  dsn_env: {DSN_ENV}\n")
    backend = open_backend(load_config(default, {}), {DSN_ENV: postgres_dsn})
    assert isinstance(backend, PostgresStateBackend)
    assert (backend.workspace, backend.schema, backend.table) == (
        "pgtest",
        "public",
        "declare_state",
    )
    local = _project(tmp_path / "r", "  path: st\n")
    assert isinstance(open_backend(load_config(local, {}), {}), LocalStateBackend)

    with pytest.raises(ConfigError) as err:
        open_backend(load_config(folder, {}), {})
    assert DSN_ENV in str(err.value) and "not set" in str(err.value)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("  backend: postgres\n", "state.backend postgres needs dsn_env"),
        ("  backend: sqlite\n", "state.backend: must be one of local, postgres"),
        ("  dsn_env: PG\n", "only applies to state.backend: postgres"),
        ("  backend: postgres\n  dsn_env: postgresql://u:p@h/db\n", "environment variable"),
        ("  backend: postgres\n  dsn_env: PG\n  table: 'drop table'\n", "PostgreSQL name"),
    ],
)
def test_bad_state_settings_are_located(tmp_path: Path, state: str, expected: str) -> None:
    folder = _project(tmp_path, state)
    with pytest.raises(ManifestError) as err:
        load_config(folder, {})
    assert "declare.yaml:" in str(err.value) and expected in str(err.value), str(err.value)


# ---- the CLI: state push / pull, and concurrent applies ---------------------------------


def _declare(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "declare", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
        cwd=REPO_ROOT,
    )


def test_state_push_and_pull_move_state_between_backends(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, workspace: str
) -> None:
    env = {DSN_ENV: postgres_dsn}
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    local = LocalStateBackend(local_dir / "state")
    first = local.write({"gateway": None, "endpoints": {}})
    current = local.write({**first, "note": "written locally"})
    pg_dir = _project(
        tmp_path / "pg",
        f"  backend: postgres\n  dsn_env: {DSN_ENV}\n  schema: {pg_schema}\n"
        f"  workspace: {workspace}\n",
    )

    pulled = _declare("state", "pull", str(local_dir))
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == local.path.read_text()  # the local file, byte for byte
    state_file = tmp_path / "pulled.json"
    state_file.write_text(pulled.stdout)

    empty = _declare("state", "pull", str(pg_dir), env=env)
    assert (empty.returncode, empty.stdout) == (0, "")
    assert "No state is stored at postgres://" in empty.stderr

    pushed = _declare("state", "push", str(state_file), str(pg_dir), env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "now serial 3" in pushed.stdout
    in_pg = json.loads(_declare("state", "pull", str(pg_dir), env=env).stdout)
    assert in_pg == {**current, "serial": 3}
    shown = json.loads(_declare("show", "--json", str(pg_dir), env=env).stdout)
    assert (shown["serial"], shown["lineage"]) == (3, current["lineage"])

    again = _declare("state", "push", str(state_file), str(pg_dir), env=env)
    assert again.returncode == 1
    assert "serial 2, older than serial 3" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = LocalStateBackend(other_dir / "state").write({"gateway": None, "endpoints": {}})
    other_file = tmp_path / "other.json"
    other_file.write_text(json.dumps(other))
    refused = _declare("state", "push", str(other_file), str(pg_dir), env=env)
    assert refused.returncode == 1
    assert other["lineage"] in refused.stderr and current["lineage"] in refused.stderr
    forced = _declare("state", "push", "--force", str(other_file), str(pg_dir), env=env)
    assert forced.returncode == 0, forced.stderr
    after = json.loads(_declare("state", "pull", str(pg_dir), env=env).stdout)
    # The file's content, as the next state of the stored history.
    assert after == {**other, "serial": 4, "lineage": current["lineage"]}

    same = tmp_path / "same.json"
    same.write_text(json.dumps(after))
    noop = _declare("state", "push", str(same), str(pg_dir), env=env)
    assert noop.returncode == 0 and "nothing pushed" in noop.stdout

    bad = tmp_path / "bad.json"
    bad.write_text('{"serial": 1}')
    broken = _declare("state", "push", str(bad), str(pg_dir), env=env)
    assert broken.returncode == 1 and str(bad) in broken.stderr
    assert "format_version" in broken.stderr and "Traceback" not in broken.stderr


def test_a_stored_state_with_a_wrong_field_is_one_located_message(
    tmp_path: Path, factory: BackendFactory, postgres_dsn: str, pg_schema: str, workspace: str
) -> None:
    """The PostgreSQL backend's read goes through the same check of every field as the
    local file's: `declare plan` names the table, the workspace and the field, and writes
    nothing."""
    backend = factory()
    stored = backend.write(
        {
            "gateway": None,
            "endpoints": {"iris": {"name": "iris", "provider": "local", "replicas": "x"}},
        }
    )
    folder = _project(
        tmp_path / "pg",
        f"  backend: postgres\n  dsn_env: {DSN_ENV}\n  schema: {pg_schema}\n"
        f"  workspace: {workspace}\n",
    )
    count = sql.SQL("SELECT count(*) FROM {} WHERE workspace = %s").format(
        sql.Identifier(pg_schema, "declare_state")
    )
    result = _declare("plan", str(folder), env={DSN_ENV: postgres_dsn})
    assert result.returncode == 1
    assert (
        f'{backend.location}: endpoints.iris.replicas: expected an array or null, found "x"'
    ) in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert _query(postgres_dsn, count, workspace) == [(1,)]
    assert factory().read() == stored


def test_missing_dsn_variable_fails_the_command_cleanly(tmp_path: Path) -> None:
    folder = _project(tmp_path, f"  backend: postgres\n  dsn_env: {DSN_ENV}\n")
    result = _declare("plan", str(folder), env={DSN_ENV: ""})
    assert result.returncode == 1
    assert f"state.dsn_env names {DSN_ENV}" in result.stderr
    assert "Traceback" not in result.stderr
    assert _declare("validate", str(folder)).returncode == 0  # validate needs no state


def test_two_concurrent_applies_serialize_on_the_lock(
    tmp_path: Path,
    mlflow_project: MlflowProject,
    postgres_dsn: str,
    pg_schema: str,
    workspace: str,
) -> None:
    """Run A applies; run B (lock timeout 1 s) fails naming A; run C (5 min) waits for A,
    then plans from A's state: no changes. One gateway, one replica in the end."""
    env = {DSN_ENV: postgres_dsn}
    port = procs.free_port()
    folder = _project(
        tmp_path / "project",
        f"  backend: postgres\n  dsn_env: {DSN_ENV}\n  schema: {pg_schema}\n"
        f"  workspace: {workspace}\n",
        f"mlflow:\n  tracking_uri: {mlflow_project.tracking_uri}\n"
        f"gateway:\n  port: {port}\ntimeouts:\n  ready_seconds: 120\n",
    )
    (folder / "iris.yaml").write_text(
        "name: iris\nconfig:\n  served_entities:\n"
        '    - entity_name: iris\n      entity_version: "1"\n      workload_size: Small\n'
    )
    backend = PostgresStateBackend(postgres_dsn, workspace, pg_schema)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    command = [sys.executable, "-m", "declare", "apply", "--auto-approve"]
    run_a = subprocess.Popen(
        [*command, str(folder)],
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_c: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 60
        while (holder := backend.lock_info()) is None:
            assert run_a.poll() is None, run_a.communicate()
            assert time.monotonic() < deadline, "run A never took the lock"
            time.sleep(0.05)
        assert holder.operation == "apply" and holder.pid == run_a.pid

        run_b = _declare("apply", "--auto-approve", "--lock-timeout", "1s", str(folder), env=env)
        assert run_b.returncode == 1
        assert "is locked by another run (waited 1 s)" in run_b.stderr
        assert f"PID:       {run_a.pid}" in run_b.stderr
        assert f"declare force-unlock {holder.id}" in run_b.stderr

        assert run_a.poll() is None, "run A finished before run C started: nothing to wait for"
        run_c = subprocess.Popen(
            [*command, "--lock-timeout", "5m", str(folder)],
            env={**base, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out_a, err_a = run_a.communicate(timeout=300)
        assert run_a.returncode == 0, err_a
        assert "Apply complete! Endpoints: 1 added" in out_a
        out_c, err_c = run_c.communicate(timeout=120)
        assert run_c.returncode == 0, err_c
        assert "No changes." in out_c  # it planned from the state run A wrote
    finally:
        for run in (run_a, run_c):
            if run is not None and run.poll() is None:
                run.kill()
                run.wait(30)
        destroyed = _declare(
            "destroy", "--auto-approve", "--lock-timeout", "1m", str(folder), env=env
        )
    assert destroyed.returncode == 0, destroyed.stderr

    history = _query(
        postgres_dsn,
        sql.SQL("SELECT serial FROM {} WHERE workspace = %s ORDER BY id").format(
            sql.Identifier(pg_schema, "declare_state")
        ),
        workspace,
    )
    serials = [s for (s,) in history]
    assert serials == list(range(1, len(serials) + 1))  # one line of history, no gap
    final = backend.read()
    assert final is not None and final["endpoints"] == {}
    assert backend.lock_info() is None
