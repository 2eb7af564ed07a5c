#!/usr/bin/env python3
"""GitHub glue for declare's CI recipe: post the plan as one pull-request comment, and fetch
the plan a pull request reviewed. Standard library only, so it runs before anything is
installed.

    declare_ci.py comment PLAN.md [--pr N]
        Post PLAN.md as a comment on the pull request, or update the comment posted before:
        it is found by the hidden marker <!-- declare-plan --> on its first line, so a pull
        request has one plan comment, always the latest.
    declare_ci.py fetch-plan [--sha SHA] [--artifact declare-plan] [--dest DIR]
        On a push to the main branch: find the pull request merged as SHA (default
        GITHUB_SHA), the newest successful run of this workflow on its head commit, and
        download and unpack its artifact (the saved plan) into DIR. Exits 1 with a clear
        message when there is none: apply then refuses to run an unreviewed plan.

Environment (set by GitHub Actions): GITHUB_TOKEN, GITHUB_REPOSITORY (owner/name),
GITHUB_API_URL (default https://api.github.com), GITHUB_EVENT_PATH (the pull request number
is read from it when --pr is not given), GITHUB_SHA, GITHUB_WORKFLOW_REF.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

MARKER = "<!-- declare-plan -->"
MAX_BODY = 65_000  # GitHub refuses comment bodies over 65,536 characters


class CIError(Exception):
    """A problem to report in one line, without a traceback."""


class GitHub:
    def __init__(self, api: str, token: str, repo: str) -> None:
        self.api = api.rstrip("/")
        self.token = token
        self.repo = repo

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.api}{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "Content-Type": "application/json",
                "User-Agent": "declare-ci",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise CIError(f"GitHub answered {exc.code} to {method} {path}: {detail}") from None
        except urllib.error.URLError as exc:
            raise CIError(f"cannot reach GitHub at {self.api}: {exc.reason}") from None
        if not raw:
            return None
        if raw[:2] == b"PK":  # a zip (artifact download)
            return raw
        return json.loads(raw)

    def pages(self, path: str) -> list[Any]:
        out: list[Any] = []
        sep = "&" if "?" in path else "?"
        for page in range(1, 51):
            items = self.request("GET", f"{path}{sep}per_page=100&page={page}")
            if isinstance(items, dict):  # e.g. {"workflow_runs": [...]}
                items = next((v for v in items.values() if isinstance(v, list)), [])
            out += items
            if len(items) < 100:
                break
        return out


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise CIError(f"{name} is not set (GitHub Actions sets it)")
    return value


def _github() -> GitHub:
    return GitHub(
        os.environ.get("GITHUB_API_URL") or "https://api.github.com",
        _env("GITHUB_TOKEN"),
        _env("GITHUB_REPOSITORY"),
    )


def _pr_number(given: int | None) -> int:
    if given:
        return given
    event_path = os.environ.get("GITHUB_EVENT_PATH")
    if event_path and Path(event_path).is_file():
        event = json.loads(Path(event_path).read_text())
        number = (event.get("pull_request") or {}).get("number") or event.get("number")
        if number:
            return int(number)
    raise CIError("no pull request number: pass --pr N or run on a pull_request event")


def comment_body(markdown: str) -> str:
    body = f"{MARKER}\n{markdown.rstrip()}\n"
    if len(body) > MAX_BODY:
        note = "\n\n*(truncated: the plan is longer than a GitHub comment can hold)*\n"
        body = body[: MAX_BODY - len(note)] + note
    return body


def post_comment(gh: GitHub, pr: int, markdown: str) -> tuple[str, int]:
    """Create or update the plan comment; ("created"|"updated", comment id)."""
    body = comment_body(markdown)
    comments = gh.pages(f"/repos/{gh.repo}/issues/{pr}/comments")
    mine = [c for c in comments if str(c.get("body", "")).startswith(MARKER)]
    if mine:
        cid = int(mine[-1]["id"])
        gh.request("PATCH", f"/repos/{gh.repo}/issues/comments/{cid}", {"body": body})
        return "updated", cid
    created = gh.request("POST", f"/repos/{gh.repo}/issues/{pr}/comments", {"body": body})
    return "created", int(created["id"])


def fetch_plan(gh: GitHub, sha: str, artifact: str, dest: Path, workflow: str | None) -> Path:
    pulls = gh.request("GET", f"/repos/{gh.repo}/commits/{sha}/pulls") or []
    merged = [p for p in pulls if p.get("merged_at")]
    if not merged:
        raise CIError(f"commit {sha[:12]} is not the merge of a pull request: no reviewed plan")
    pr = merged[0]
    head = pr["head"]["sha"]
    query = urllib.parse.urlencode({"head_sha": head, "status": "success"})
    runs = gh.pages(f"/repos/{gh.repo}/actions/runs?{query}")
    if workflow:
        runs = [r for r in runs if str(r.get("path", "")) in workflow]
    runs = [r for r in runs if r.get("event") == "pull_request"]
    runs.sort(key=lambda r: str(r.get("created_at", "")), reverse=True)
    for run in runs:
        arts = gh.pages(f"/repos/{gh.repo}/actions/runs/{run['id']}/artifacts")
        found = [a for a in arts if a.get("name") == artifact and not a.get("expired")]
        if found:
            data = gh.request("GET", f"/repos/{gh.repo}/actions/artifacts/{found[0]['id']}/zip")
            if not isinstance(data, bytes):
                raise CIError(f"artifact {artifact} of run {run['id']} is not a zip")
            dest.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for name in zf.namelist():
                    target = (dest / name).resolve()
                    if not target.is_relative_to(dest.resolve()):
                        raise CIError(f"artifact entry {name!r} escapes {dest}")
                zf.extractall(dest)
            return dest
    raise CIError(
        f"pull request #{pr['number']}: no successful run on {head[:12]} with an artifact "
        f"{artifact!r} (expired, or the plan job did not succeed): plan and review again"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("comment", help="post or update the plan comment")
    c.add_argument("markdown", type=Path)
    c.add_argument("--pr", type=int)
    f = sub.add_parser("fetch-plan", help="download the reviewed plan of a merged PR")
    f.add_argument("--sha")
    f.add_argument("--artifact", default="declare-plan")
    f.add_argument("--dest", type=Path, default=Path("declare-plan"))
    args = parser.parse_args(argv)
    try:
        gh = _github()
        if args.command == "comment":
            text = args.markdown.read_text(encoding="utf-8")
            how, cid = post_comment(gh, _pr_number(args.pr), text)
            print(f"plan comment {how} (id {cid})")
        else:
            sha = args.sha or _env("GITHUB_SHA")
            workflow = os.environ.get("GITHUB_WORKFLOW_REF")
            dest = fetch_plan(gh, sha, args.artifact, args.dest, workflow)
            print(f"reviewed plan in {dest}: {', '.join(sorted(p.name for p in dest.iterdir()))}")
    except (CIError, OSError) as exc:
        print(f"declare_ci: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
