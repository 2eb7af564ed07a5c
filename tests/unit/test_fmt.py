"""declare fmt: canonical layout that keeps comments and meaning; --check, --diff, stdin.

Golden files: tests/unit/testdata/fmt/<case>.in.<ext> is formatted and compared with
<case>.out.<ext>. Rewrite the outputs after an intended change with
`UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_fmt.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from declare.errors import ManifestError
from declare.fmt import format_text
from tests.unit.conftest import Ran

TESTDATA = Path(__file__).parent / "testdata" / "fmt"
REPO = Path(__file__).resolve().parents[2]
CASES = sorted(p for p in TESTDATA.iterdir() if ".in." in p.name)


def _load_all(text: str, name: str) -> list[object]:
    if name.endswith(".json"):
        return [json.loads(text)]
    return list(yaml.safe_load_all(text))


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden(case: Path) -> None:
    text = case.read_text(encoding="utf-8")
    out = format_text(text, case.name)
    expected = case.with_name(case.name.replace(".in.", ".out."))
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(out, encoding="utf-8")
    assert out == expected.read_text(encoding="utf-8")
    # Formatting never changes what the file means, and a formatted file stays as it is.
    assert _load_all(out, case.name) == _load_all(text, case.name)
    assert format_text(out, case.name) == out


def test_comments_are_kept_and_move_with_their_key() -> None:
    out = format_text((TESTDATA / "reorder-comments.in.yaml").read_text(), "m.yaml")
    lines = out.splitlines()
    # The editor's schema line stays first; a comment above a key moves with the key.
    assert lines[0] == "# yaml-language-server: $schema=../../schemas/endpoint.schema.json"
    assert lines[lines.index("# about the name") + 1] == "name: iris   # the name"
    above = lines[lines.index("      workload_size: Small") - 1]
    assert above == "      # a comment line before workload"
    assert "      - served_model_name: iris-1 # route" in lines
    assert sum(line.lstrip().startswith("#") or " # " in line for line in lines) == 9


def test_quickstart_manifest_is_already_canonical() -> None:
    path = REPO / "examples" / "quickstart" / "iris.yaml"
    text = path.read_text(encoding="utf-8")
    assert format_text(text, path.name) == text


def test_not_yaml_is_a_located_error() -> None:
    with pytest.raises(ManifestError) as info:
        format_text("name: iris\nconfig: [unclosed\n", "bad.yaml")
    assert str(info.value).startswith("1 problem in the manifests:\n  bad.yaml:3: (syntax):")


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 1000),
    st.text(alphabet="ab1 :#-'\"{}*&!%@,.\\/", max_size=8),
    st.sampled_from(["true", "null", "1.5", "007", "~", "yes", "0x1f", "1e3", ""]),
)
_keys = st.sampled_from(["name", "config", "tags", "kind", "zz", "served_entities", "a b"])
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _value, min_size=1, max_size=6), st.booleans())
def test_any_document_keeps_its_meaning_and_is_stable(data: dict[str, object], flow: bool) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, sort_keys=True, allow_unicode=True)
    out = format_text(text, "m.yaml")
    assert yaml.safe_load(out) == data
    assert format_text(out, "m.yaml") == out


# -- the command --------------------------------------------------------------------------


UNFORMATTED = (
    "config:\n    served_entities:\n    - entity_name: iris\n      entity_version: '1'\n"
    "name: iris\n"
)
FORMATTED = (
    'name: iris\nconfig:\n  served_entities:\n    - entity_name: iris\n      entity_version: "1"\n'
)


def test_check_exits_3_lists_the_file_and_changes_nothing(
    tmp_path: Path, declare_cli: Callable[..., Ran]
) -> None:
    (tmp_path / "iris.yaml").write_text(UNFORMATTED)
    (tmp_path / "ok.yaml").write_text(FORMATTED.replace("iris", "ok"))
    result = declare_cli("fmt", "--check", ".", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["iris.yaml"]
    assert (tmp_path / "iris.yaml").read_text() == UNFORMATTED


def test_fmt_rewrites_then_check_passes(tmp_path: Path, declare_cli: Callable[..., Ran]) -> None:
    (tmp_path / "iris.yaml").write_text(UNFORMATTED)
    result = declare_cli("fmt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["iris.yaml"]
    assert (tmp_path / "iris.yaml").read_text() == FORMATTED
    again = declare_cli("fmt", "--check", cwd=tmp_path)
    assert (again.returncode, again.stdout) == (0, "")


def test_diff_prints_a_unified_diff(tmp_path: Path, declare_cli: Callable[..., Ran]) -> None:
    (tmp_path / "iris.yaml").write_text(UNFORMATTED)
    result = declare_cli("fmt", "--check", "--diff", "iris.yaml", cwd=tmp_path)
    assert result.returncode == 3
    assert "--- a/iris.yaml\n+++ b/iris.yaml\n" in result.stdout
    assert "-name: iris\n" in result.stdout and "+name: iris\n" in result.stdout


def test_stdin_to_stdout(tmp_path: Path, declare_cli: Callable[..., Ran]) -> None:
    result = declare_cli("fmt", "-", cwd=tmp_path, stdin=UNFORMATTED)
    assert (result.returncode, result.stdout) == (0, FORMATTED)


def test_bad_file_is_an_error_without_traceback(
    tmp_path: Path, declare_cli: Callable[..., Ran]
) -> None:
    (tmp_path / "bad.yaml").write_text("name: [\n")
    result = declare_cli("fmt", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: 1 problem in the manifests:\n  bad.yaml:")
    assert "Traceback" not in result.stderr
