"""`loophound demo` end to end, and its handling of bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loophound.cli import DEMO_PATHS


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the loophound command line in a child process (120 s at most)."""
    return subprocess.run(
        [sys.executable, "-m", "loophound.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_demo_reports_every_blocking_view_and_no_clean_one(tmp_path: Path) -> None:
    """The demo prints an incident for each blocking route, none for clean ones, and a log."""
    out = tmp_path / "events.jsonl"
    out.write_text('{"kept": "a line that was there before"}\n')
    done = run_cli("demo", "--requests", "1", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = done.stdout
    blocking_routes = {
        "blocking/sleep/",
        "blocking/file/",
        "blocking/cpu/",
        "blocking/json/",
        "blocking/subprocess/",
        "blocking/items/<int:pk>/",
        "blocking/orm/",
    }
    assert len(blocking_routes) == sum(1 for _path, blocking in DEMO_PATHS if blocking)
    for route in blocking_routes:
        assert f"\n{route} " in table, table
    assert "clean/" not in table
    assert "views.py:" in table
    lines = out.read_text().splitlines()
    assert json.loads(lines[0]) == {"kept": "a line that was there before"}
    records = [json.loads(line) for line in lines[1:]]
    incidents = [r for r in records if r["kind"] != "request"]
    assert {r["request"]["route"] for r in incidents if not r["quiet"]} == blocking_routes
    # The run ends with its HTML report, next to the log.
    assert out.with_suffix(".html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--port", "http"], "invalid --port 'http'"),
        (["demo", "--port", "70000"], "invalid --port 70000"),
        (["demo", "--requests", "0"], "invalid --requests '0'"),
        (["demo", "--out", "/nonexistent/dir/x.jsonl"], "does not exist"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """A bad argument names itself and what is accepted, exits 2 and starts nothing."""
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert list(tmp_path.iterdir()) == []
