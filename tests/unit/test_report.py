"""`loophound report`: reading logs, aggregating, the table, JSON, CSV and folded stacks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from loophound.cli import main
from loophound.report.aggregate import summarize
from loophound.report.command import parse_since
from loophound.report.reader import Problem, read_records
from loophound.report.sketch import Sketch

BASE = 1_795_000_000_000_000_000


def record(**fields: Any) -> dict[str, Any]:
    """Return an incident record in the jsonl sink's schema, with ``fields`` changed."""
    base: dict[str, Any] = {
        "schema": 1,
        "kind": "call",
        "operation": "time.sleep",
        "detail": None,
        "started_at": BASE,
        "duration": 0.2,
        "culprit": {"file": "/srv/app/views.py", "line": 10, "function": "view"},
        "frames": [
            {"file": "/srv/app/urls.py", "line": 3, "function": "dispatch"},
            {"file": "/srv/app/views.py", "line": 10, "function": "view"},
        ],
        "fingerprint": "aaaa",
        "thread": {"id": 1, "name": "MainThread"},
        "task": "Task-1",
        "detectors": ["patches"],
        "request": {"id": "1", "method": "GET", "path": "/items/1/", "route": "items/<int:pk>/"},
        "quiet": False,
        "suppressed": 0,
        "pid": 100,
        "primitives": [],
        "samples": None,
        "loop_cpu": None,
        "victims": [],
    }
    base.update(fields)
    return base


def write_log(path: Path, records: list[dict[str, Any]], extra_lines: tuple[str, ...] = ()) -> Path:
    """Write records (and raw lines) as a JSON-lines log."""
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI; return (status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_groups_by_culprit_rank_by_total_blocked_time(tmp_path: Path) -> None:
    """Incidents of one call site are one group; groups are ranked by total blocked time."""
    log = write_log(
        tmp_path / "a.jsonl",
        [
            record(duration=0.1),
            record(duration=0.3, started_at=BASE + 5),
            record(
                fingerprint="bbbb",
                culprit={"file": "/x.py", "line": 2, "function": "f"},
                duration=0.05,
            ),
        ],
    )
    summary = summarize(read_records([str(log)], []))
    first, second = summary.ranked()
    assert (first.key, first.count, round(first.total, 6)) == ("aaaa", 2, 0.4)
    assert (first.line, first.function) == (10, "view")
    assert first.maximum == 0.3
    assert (first.first_seen, first.last_seen) == (BASE, BASE + 5)
    assert second.key == "bbbb"


def test_suppressed_calls_count_and_quiet_loads_are_left_out(tmp_path: Path) -> None:
    """A record's suppressed calls add to its count; quiet module loads are counted apart."""
    log = write_log(
        tmp_path / "a.jsonl", [record(suppressed=4), record(operation="import", quiet=True)]
    )
    summary = summarize(read_records([str(log)], []))
    (group,) = summary.ranked()
    assert group.count == 5
    assert summary.quiet == 1


def test_bad_lines_are_reported_with_file_and_line_and_skipped(tmp_path: Path) -> None:
    """Invalid JSON, an unknown schema and an unknown kind are skipped, each named by line."""
    log = write_log(
        tmp_path / "a.jsonl",
        [record()],
        ("{not json", json.dumps(record(schema=9)), json.dumps(record(kind="odd")), "[1, 2]"),
    )
    problems: list[Problem] = []
    records = list(read_records([str(log)], problems))
    assert len(records) == 1
    assert [(p.line, p.message.split(" (")[0]) for p in problems] == [
        (2, "not valid JSON"),
        (3, "unknown schema version 9"),
        (4, "unknown kind 'odd'"),
        (5, "not a JSON object"),
    ]


def test_an_infinite_duration_is_a_bad_value_not_a_crash(tmp_path: Path) -> None:
    """A duration of 1e400 (infinity in JSON) is counted without a duration."""
    log = tmp_path / "a.jsonl"
    log.write_text(json.dumps(record()).replace('"duration": 0.2', '"duration": 1e400') + "\n")
    (group,) = summarize(read_records([str(log)], [])).ranked()
    assert (group.count, group.total) == (1, 0.0)


def test_group_by_route_counts_requests_and_thread_hops(tmp_path: Path) -> None:
    """With --by route, request records give each route its requests and thread hops."""
    request = {"id": "2", "method": "GET", "path": "/items/1/", "route": "items/<int:pk>/"}
    log = write_log(
        tmp_path / "a.jsonl",
        [
            record(),
            {
                "schema": 1,
                "kind": "request",
                "request": request,
                "started_at": BASE,
                "duration": 0.3,
                "thread_hops": {"count": 2, "wait": 0.01, "run": 0.02},
                "pid": 1,
            },
        ],
    )
    summary = summarize(read_records([str(log)], []), by="route")
    (group,) = summary.ranked()
    assert group.key == "items/<int:pk>/"
    hops = summary.requests["items/<int:pk>/"]
    assert (hops.count, hops.hops, hops.wait, hops.run) == (1, 2, 0.01, 0.02)


def test_since_drops_older_incidents(tmp_path: Path) -> None:
    """Incidents before --since are not counted."""
    log = write_log(tmp_path / "a.jsonl", [record(), record(started_at=BASE + 10**9)])
    summary = summarize(read_records([str(log)], []), since=BASE + 1)
    assert summary.incidents == 1


def test_parse_since_reads_durations_and_iso_times() -> None:
    """--since takes 30m/2h/1d ago or an ISO time, UTC unless it has an offset."""
    assert parse_since("2h", now=10_000.0) == int((10_000.0 - 7200) * 1e9)
    assert parse_since("1970-01-01T00:00:10") == 10 * 10**9
    assert parse_since("1970-01-01T01:00:10+01:00") == 10 * 10**9


def test_sketch_quantiles_are_within_one_percent_and_within_the_values_seen() -> None:
    """The sketch's p50/p99 are within 1 % of the exact ones and never outside min..max."""
    sketch = Sketch()
    values = [i / 1000 for i in range(1, 1001)]
    for value in values:
        sketch.add(value)
    p50, p99 = sketch.quantile(0.5), sketch.quantile(0.99)
    assert p50 is not None
    assert abs(p50 - 0.5) / 0.5 < 0.011
    assert p99 is not None
    assert abs(p99 - 0.99) / 0.99 < 0.011
    single = Sketch()
    single.add(0.2)
    assert single.quantile(0.5) == single.quantile(0.99) == 0.2


def test_logs_and_globs_of_several_workers_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two workers' logs, named by a glob, merge into one group with both processes."""
    write_log(tmp_path / "w1.jsonl", [record(pid=1)])
    write_log(tmp_path / "w2.jsonl", [record(pid=2, started_at=BASE + 1)])
    status, out, _ = run(capsys, "report", str(tmp_path / "w*.jsonl"), "--format", "json")
    assert status == 0
    document = json.loads(out)
    (group,) = document["groups"]
    assert (group["count"], group["processes"]) == (2, 2)
    assert group["routes"] == {"items/<int:pk>/": 2}


def test_table_and_csv_name_the_culprit_and_its_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table shows the culprit line and function; the CSV has one row per group."""
    log = write_log(tmp_path / "a.jsonl", [record(), record(duration=0.4, started_at=BASE + 1)])
    status, out, _ = run(capsys, "report", str(log))
    assert status == 0
    assert "/srv/app/views.py:10 view" in out
    assert "time.sleep" in out
    assert "2 incidents in 1 groups" in out
    status, out, _ = run(capsys, "report", str(log), "--format", "csv", "--top", "1")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1
    assert rows[0]["line"] == "10"
    assert rows[0]["count"] == "2"
    assert float(rows[0]["max_seconds"]) == 0.4


def test_folded_stacks_weigh_blocked_milliseconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--folded writes `frame;frame weight` lines: calls by their stack, stalls by samples."""
    stall = record(
        kind="stall",
        operation="cpu",
        duration=0.3,
        fingerprint="cccc",
        samples={"main\u00a0(/a.py:1);spin\u00a0(/a.py:5)": 2, "main\u00a0(/a.py:1)": 1},
    )
    log = write_log(tmp_path / "a.jsonl", [record(), stall])
    out_file = tmp_path / "stacks.txt"
    status, _, _ = run(capsys, "report", str(log), "--folded", str(out_file))
    assert status == 0
    lines = dict(line.rsplit(" ", 1) for line in out_file.read_text().splitlines())
    assert lines == {
        "main\u00a0(/a.py:1);spin\u00a0(/a.py:5)": "200",
        "dispatch\u00a0(/srv/app/urls.py:3);view\u00a0(/srv/app/views.py:10)": "200",
        "main\u00a0(/a.py:1)": "100",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "missing.jsonl"], "no such file: 'missing.jsonl'"),
        (["report", "nothing-*.jsonl"], "no file matches 'nothing-*.jsonl'"),
        (["report", "LOG", "--top", "0"], "invalid --top '0'"),
        (["report", "LOG", "--since", "yesterday"], "invalid --since 'yesterday'"),
        (["report", "LOG", "--by", "colour"], "invalid choice: 'colour'"),
        (["report", "LOG", "--html", "LOG"], "refusing to write over"),
        (["report", "LOG", "--folded", "/no/such/dir/x.txt"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2_and_say_why(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    """A missing log, a bad option or an output over an input exits 2 naming the problem."""
    monkeypatch.chdir(tmp_path)
    log = write_log(tmp_path / "events.jsonl", [record()])
    before = log.read_bytes()
    status, out, err = run(capsys, *[str(log) if a == "LOG" else a for a in argv])
    assert status == 2
    assert message in err
    assert out == ""
    assert log.read_bytes() == before
