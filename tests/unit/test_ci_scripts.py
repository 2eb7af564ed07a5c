"""The CI recipe's scripts (examples/ci/), run for real against a fake GitHub on loopback.

GitHub is not reachable from the tests, so `FakeGitHub` serves the few REST endpoints the
scripts use (issue comments, a commit's pull requests, workflow runs, artifacts) on
127.0.0.1, checking the bearer token. The scripts run as their own processes, as in a
GitHub Actions step; plan.sh runs the real `python -m declare` on a project served by the
in-memory fake provider. The workflow file is checked for what would break it on GitHub.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "examples" / "ci"
SCRIPT = CI / "scripts" / "declare_ci.py"
PLAN_SH = CI / "scripts" / "plan.sh"
TOKEN = "test-token"
MARKER = "<!-- declare-plan -->"


class FakeGitHub:
    """The GitHub REST endpoints the CI scripts call, with in-memory data."""

    def __init__(self) -> None:
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.pulls_of_commit: dict[str, list[dict[str, Any]]] = {}
        self.runs: list[dict[str, Any]] = []
        self.artifacts: dict[int, list[dict[str, Any]]] = {}
        self.zips: dict[int, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.next_id = 1000
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method: str) -> None:
                fake.requests.append((method, self.path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, {"message": "Bad credentials"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                url = urlparse(self.path)
                code, answer = fake.route(method, url.path, parse_qs(url.query), body)
                self._send(code, answer)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    @staticmethod
    def _page(items: list[Any], query: dict[str, list[str]]) -> list[Any]:
        per = int(query.get("per_page", ["30"])[0])
        page = int(query.get("page", ["1"])[0])
        return items[(page - 1) * per : page * per]

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        parts = path.strip("/").split("/")
        # /repos/o/r/issues/N/comments
        if parts[3:4] == ["issues"] and parts[5:] == ["comments"]:
            pr = int(parts[4])
            if method == "GET":
                return 200, self._page(self.comments.get(pr, []), query)
            self.next_id += 1
            comment = {"id": self.next_id, "body": body["body"]}
            self.comments.setdefault(pr, []).append(comment)
            return 201, comment
        # /repos/o/r/issues/comments/ID
        if parts[3:5] == ["issues", "comments"] and method == "PATCH":
            for comments in self.comments.values():
                for c in comments:
                    if c["id"] == int(parts[5]):
                        c["body"] = body["body"]
                        return 200, c
            return 404, {"message": "Not Found"}
        if parts[3:4] == ["commits"] and parts[5:] == ["pulls"]:
            return 200, self.pulls_of_commit.get(parts[4], [])
        if parts[3:5] == ["actions", "runs"] and len(parts) == 5:
            runs = [
                r
                for r in self.runs
                if r["head_sha"] == query.get("head_sha", [""])[0]
                and r["conclusion"] == query.get("status", [""])[0]
            ]
            return 200, {"total_count": len(runs), "workflow_runs": self._page(runs, query)}
        if parts[3:5] == ["actions", "runs"] and parts[6:] == ["artifacts"]:
            arts = self.artifacts.get(int(parts[5]), [])
            return 200, {"total_count": len(arts), "artifacts": self._page(arts, query)}
        if parts[3:5] == ["actions", "artifacts"] and parts[6:] == ["zip"]:
            return 200, self.zips[int(parts[5])]
        return 404, {"message": "Not Found"}


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    yield fake
    fake.close()


def _run(fake: FakeGitHub, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": os.environ["PATH"],
        "GITHUB_API_URL": fake.url,
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": "acme/models",
        **env,
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- the plan comment -----------------------------------------------------------------------


def test_comment_is_created_once_then_updated(github: FakeGitHub, tmp_path: Path) -> None:
    # 150 comments of people first: the plan comment is found past GitHub's first page.
    github.comments[7] = [{"id": i, "body": f"looks good {i}"} for i in range(150)]
    plan = tmp_path / "plan.md"
    plan.write_text("**declare plan:** 0 to create, 1 to update, 0 to destroy; 5 actions.\n")
    first = _run(github, "comment", str(plan), "--pr", "7", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("plan comment created")

    plan.write_text("**declare plan:** no changes. The endpoints match the manifests.\n")
    second = _run(github, "comment", str(plan), "--pr", "7", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("plan comment updated")

    ours = [c for c in github.comments[7] if c["body"].startswith(MARKER)]
    assert len(ours) == 1 and len(github.comments[7]) == 151
    assert (
        ours[0]["body"]
        == f"{MARKER}\n**declare plan:** no changes. The endpoints match the manifests.\n"
    )
    assert github.comments[7][0] == {"id": 0, "body": "looks good 0"}


def test_pull_request_number_comes_from_the_event(github: FakeGitHub, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"number": 12, "pull_request": {"number": 12}}))
    plan = tmp_path / "plan.md"
    plan.write_text("x" * 70_000)
    result = _run(github, "comment", str(plan), cwd=tmp_path, GITHUB_EVENT_PATH=str(event))
    assert result.returncode == 0, result.stderr
    (comment,) = github.comments[12]
    # A plan longer than a comment can hold is cut with a note, not refused by GitHub.
    assert len(comment["body"]) <= 65_000 and comment["body"].rstrip().endswith("hold)*")


def test_bad_token_is_one_clear_line(github: FakeGitHub, tmp_path: Path) -> None:
    plan = tmp_path / "plan.md"
    plan.write_text("plan\n")
    result = _run(github, "comment", str(plan), "--pr", "1", cwd=tmp_path, GITHUB_TOKEN="wrong")
    assert result.returncode == 1
    assert result.stderr.startswith("declare_ci: GitHub answered 401 to GET /repos/acme/models/")
    assert "Traceback" not in result.stderr


# -- fetching the reviewed plan -----------------------------------------------------------


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_fetch_plan_downloads_the_newest_successful_run_of_the_merged_pr(
    github: FakeGitHub, tmp_path: Path
) -> None:
    github.pulls_of_commit["merge1"] = [
        {"number": 7, "merged_at": "2026-01-02T00:00:00Z", "head": {"sha": "head7"}}
    ]
    github.runs = [
        {"id": 1, "head_sha": "head7", "conclusion": "success", "event": "pull_request",
         "created_at": "2026-01-01T00:00:00Z", "path": ".github/workflows/declare.yml"},
        {"id": 2, "head_sha": "head7", "conclusion": "success", "event": "pull_request",
         "created_at": "2026-01-01T01:00:00Z", "path": ".github/workflows/declare.yml"},
    ]  # fmt: skip
    github.artifacts = {
        1: [{"id": 11, "name": "declare-plan", "expired": False}],
        2: [{"id": 22, "name": "declare-plan", "expired": False}],
    }
    github.zips = {
        11: _zip({"plan.bin": b"old", "exitcode": b"2\n"}),
        22: _zip({"plan.bin": b"newest", "plan.md": b"# plan", "exitcode": b"2\n"}),
    }
    result = _run(
        github,
        "fetch-plan",
        "--dest",
        "declare-plan",
        cwd=tmp_path,
        GITHUB_SHA="merge1",
        GITHUB_WORKFLOW_REF="acme/models/.github/workflows/declare.yml@refs/heads/main",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "declare-plan" / "plan.bin").read_bytes() == b"newest"
    assert "reviewed plan in declare-plan: exitcode, plan.bin, plan.md" in result.stdout


def test_fetch_plan_refuses_a_push_that_no_pull_request_reviewed(
    github: FakeGitHub, tmp_path: Path
) -> None:
    result = _run(github, "fetch-plan", cwd=tmp_path, GITHUB_SHA="direct-push-sha")
    assert result.returncode == 1
    assert "is not the merge of a pull request: no reviewed plan" in result.stderr
    assert not (tmp_path / "declare-plan").exists()


def test_fetch_plan_without_artifact_says_plan_again(github: FakeGitHub, tmp_path: Path) -> None:
    github.pulls_of_commit["m"] = [{"number": 3, "merged_at": "x", "head": {"sha": "h"}}]
    github.runs = [
        {"id": 5, "head_sha": "h", "conclusion": "success", "event": "pull_request",
         "created_at": "t", "path": "p"}
    ]  # fmt: skip
    result = _run(github, "fetch-plan", "--sha", "m", cwd=tmp_path)
    assert result.returncode == 1
    assert "pull request #3: no successful run on h with an artifact 'declare-plan'" in (
        result.stderr
    )


# -- plan.sh with the real declare ----------------------------------------------------------


@pytest.fixture
def serving(tmp_path: Path) -> Path:
    project = tmp_path / "serving"
    (project / "model").mkdir(parents=True)
    (project / "model" / "MLmodel").write_text("flavors: {}\n")
    (project / "demo.yaml").write_text(
        "name: demo\nprovider: fake\nconfig:\n  served_entities:\n"
        "    - name: m\n      model_uri: ./model\n"
    )
    return project


def _plan_sh(project: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "DECLARE": f"{sys.executable} -m declare",
        "GITHUB_OUTPUT": str(out.parent / "github_output"),
    }
    return subprocess.run(
        ["bash", str(PLAN_SH), str(project), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_plan_sh_writes_the_comment_and_reports_changes(serving: Path, tmp_path: Path) -> None:
    out = tmp_path / "declare-plan"
    result = _plan_sh(serving, out)
    assert result.returncode == 0, result.stderr
    md = (out / "plan.md").read_text()
    assert md.startswith("**declare plan:** 1 to create, 0 to update, 0 to destroy;")
    assert (out / "exitcode").read_text().strip() == "2"
    assert (tmp_path / "github_output").read_text().splitlines() == ["changes=true", "exitcode=2"]


def test_plan_sh_posts_the_error_when_planning_fails(serving: Path, tmp_path: Path) -> None:
    (serving / "demo.yaml").write_text("name: demo\nconfig:\n  served_entities: []\n")
    out = tmp_path / "declare-plan"
    result = _plan_sh(serving, out)
    assert result.returncode == 1
    md = (out / "plan.md").read_text()
    assert md.startswith("**declare plan failed** (exit 1); nothing will be applied")
    assert "demo.yaml:3: config.served_entities" in md
    assert (tmp_path / "github_output").read_text().splitlines() == ["changes=false", "exitcode=1"]


# -- the workflow file ------------------------------------------------------------------------


def test_workflow_calls_declare_safely_and_its_scripts_exist() -> None:
    path = CI / ".github" / "workflows" / "declare.yml"
    workflow = yaml.safe_load(path.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"pull_request", "push"}
    assert triggers["push"]["branches"] == ["main"]
    jobs = workflow["jobs"]
    assert set(jobs) == {"plan", "apply"}
    runs = [s["run"] for job in jobs.values() for s in job["steps"] if "run" in s]
    for text in runs:
        for line in text.splitlines():
            words = line.split()
            # `declare` alone is the bash builtin; the workflow must call the module.
            assert "declare" not in words[:1], line
    text = path.read_text()
    assert "--auto-approve" in text and "apply" in text
    assert 'declare_ci.py" comment declare-plan/plan.md' in text
    assert jobs["plan"]["permissions"]["pull-requests"] == "write"
    scripts = {p.name for p in (CI / "scripts").iterdir()}
    assert {"plan.sh", "declare_ci.py"} <= scripts
    plan_sh = PLAN_SH.read_text()
    assert "--format markdown --detailed-exitcode" in plan_sh
    assert MARKER in SCRIPT.read_text()
