"""The report as a terminal table, JSON or CSV, and as folded stacks."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from typing import Any

from loophound.report.aggregate import Group, Summary

__all__ = ["FORMATS", "render", "rows", "write_folded"]

FORMATS = ("table", "json", "csv")


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value * 1000:.1f}"


def _when(ns: int) -> str:
    moment = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _short(path: str | None) -> str:
    if path is None:
        return "?"
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if not relative.startswith("..") else path


def _top(counter: Any, limit: int = 3) -> str:
    names = [name for name, _ in counter.most_common(limit)]
    more = len(counter) - len(names)
    return ", ".join(names) + (f" +{more}" if more > 0 else "")


def rows(summary: Summary, top: int | None) -> list[dict[str, Any]]:
    """Return one plain dict per group, ranked by total blocked time."""
    return [_row(summary, group) for group in summary.ranked(top)]


def _row(summary: Summary, group: Group) -> dict[str, Any]:
    row: dict[str, Any] = {summary.by: group.key}
    if summary.by == "culprit":
        row.update(file=group.file, line=group.line, function=group.function)
    row.update(
        operations=dict(group.operations.most_common()),
        count=group.count,
        total_seconds=round(group.total, 6),
        p50_seconds=group.quantile(0.5),
        p99_seconds=group.quantile(0.99),
        max_seconds=group.maximum if group.sketch.count else None,
        routes=dict(group.routes.most_common()),
        first_seen=group.first_seen,
        last_seen=group.last_seen,
        processes=len(group.pids),
    )
    if summary.by == "route":
        requests = summary.requests.get(group.key)
        if requests is not None:
            row["requests"] = requests.count
            row["thread_hops"] = {
                "count": requests.hops,
                "wait_seconds": round(requests.wait, 6),
                "run_seconds": round(requests.run, 6),
            }
    return row


def _table(summary: Summary, top: int | None) -> str:
    by = summary.by
    header = [by if by != "culprit" else "culprit", "operation", "count", "total s"]
    header += ["p50 ms", "p99 ms", "max ms", "routes" if by != "route" else "requests"]
    header += ["first seen (UTC)", "last seen (UTC)"]
    table = [header]
    for group in summary.ranked(top):
        if by == "culprit":
            name = f"{_short(group.file)}:{group.line} {group.function or '?'}"
        else:
            name = group.key
        if by == "route":
            requests = summary.requests.get(group.key)
            last = str(requests.count) if requests is not None else ""
        else:
            last = _top(group.routes)
        table.append(
            [
                name,
                _top(group.operations, 2),
                str(group.count),
                f"{group.total:.3f}",
                _ms(group.quantile(0.5)),
                _ms(group.quantile(0.99)),
                _ms(group.maximum if group.sketch.count else None),
                last,
                _when(group.first_seen),
                _when(group.last_seen),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    span = ""
    if summary.first_seen is not None and summary.last_seen is not None:
        span = f" from {_when(summary.first_seen)} to {_when(summary.last_seen)} UTC"
    lines.append("")
    lines.append(
        f"{summary.incidents} incidents in {len(summary.groups)} groups{span}; "
        f"{summary.quiet} quiet module loads not shown"
    )
    return "\n".join(lines)


def render(summary: Summary, fmt: str, top: int | None) -> str:
    """Return the report in ``fmt`` (one of FORMATS)."""
    if fmt == "json":
        document = {
            "by": summary.by,
            "incidents": summary.incidents,
            "quiet": summary.quiet,
            "first_seen": summary.first_seen,
            "last_seen": summary.last_seen,
            "groups": rows(summary, top),
        }
        return json.dumps(document, indent=2, ensure_ascii=False)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        records = rows(summary, top)
        columns = [summary.by, "file", "line", "function", "operations", "count"]
        columns += ["total_seconds", "p50_seconds", "p99_seconds", "max_seconds", "routes"]
        columns += ["first_seen", "last_seen"]
        writer.writerow(columns)
        for row in records:
            writer.writerow(
                [
                    ";".join(row[c]) if isinstance(row.get(c), dict) else row.get(c, "")
                    for c in columns
                ]
            )
        return buffer.getvalue().rstrip("\n")
    return _table(summary, top)


def write_folded(summary: Summary, path: str) -> int:
    """Write folded stacks (``a;b;c weight``, milliseconds blocked); return the lines."""
    lines = 0
    with open(path, "w", encoding="utf-8") as handle:
        for stack, weight in sorted(summary.stacks.items(), key=lambda item: -item[1]):
            handle.write(f"{stack} {max(1, round(weight))}\n")
            lines += 1
    return lines
