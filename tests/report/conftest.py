"""Fixtures of the HTML report's tests: a real demo log, and a log full of hostile strings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from report_data import hostile_records, make_summary

from loophound.report.html import write_html
from loophound.sinks.jsonl import SCHEMA_VERSION

#: Upper bound of `loophound demo --requests 1` (about 5 s): under pytest's 120 s per test.
DEMO_BOUND = 100.0


@pytest.fixture(scope="session")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The event log of a real `loophound demo --requests 1` run (a uvicorn subprocess)."""
    directory = tmp_path_factory.mktemp("demo")
    out = directory / "events.jsonl"
    # The demo's own settings only: loophound reads (and validates) LOOPHOUND_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPHOUND_")}
    done = subprocess.run(
        [sys.executable, "-m", "loophound.cli", "demo", "--requests", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=directory,
        env=env,
        timeout=DEMO_BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
    return out


@pytest.fixture(scope="session")
def demo_html(demo_log: Path) -> Path:
    """The HTML report of the demo log, written by write_html."""
    summary, problems = make_summary(demo_log)
    out = demo_log.with_name("report.html")
    write_html(summary, str(out), [str(demo_log)], problems)
    return out


@pytest.fixture(scope="session")
def hostile_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log (itself named with markup) whose strings are all hostile, plus bad lines."""
    directory = tmp_path_factory.mktemp("hostile")
    out = directory / "<img src=x onerror=alert(1)>.jsonl"
    lines = [json.dumps(record) for record in hostile_records()]
    # Bad lines: their messages quote what the line held.
    lines.append(json.dumps({"schema": "<script>alert(1)</script>", "kind": "call"}))
    lines.append(json.dumps({"schema": SCHEMA_VERSION, "kind": "<b onmouseover=alert(1)>"}))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def hostile_html(hostile_log: Path) -> Path:
    """The HTML report of the hostile log."""
    summary, problems = make_summary(hostile_log)
    assert len(problems) == 2
    out = hostile_log.with_name("hostile.html")
    write_html(summary, str(out), [str(hostile_log)], problems)
    return out
