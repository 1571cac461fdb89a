"""``loophound report FILES... [--by] [--since] [--top] [--format] [--html] [--folded]``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable

from loophound.report.aggregate import GROUPINGS, Summary, summarize
from loophound.report.output import FORMATS, render, write_folded
from loophound.report.reader import Problem, ReportError, expand, read_records

__all__ = ["add_parser", "parse_since", "run"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
#: Problems printed one by one; the rest are counted.
_PROBLEMS_SHOWN = 20


def parse_since(text: str, now: float | None = None) -> int:
    """Return epoch ns for ``--since``: ``30m``, ``2h``, ``1d`` ago, or an ISO time (UTC)."""
    value = text.strip()
    match = _RELATIVE.match(value)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return int(((time.time() if now is None else now) - seconds) * 1e9)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --since {text!r}: expected a duration ago such as 30m, 2h, 1d, or an "
            "ISO time such as 2026-11-24T09:30 (UTC unless it has an offset)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1e9)


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(
            f"invalid --top {text!r}: expected an integer from 1 to 100000"
        )
    return value


def _output(flag: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        directory = os.path.dirname(os.path.abspath(text))
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"invalid {flag} {text!r}: a directory")
        if not os.path.isdir(directory):
            raise argparse.ArgumentTypeError(
                f"invalid {flag} {text!r}: the directory {directory!r} does not exist"
            )
        return text

    return check


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` subcommand."""
    report = commands.add_parser(
        "report",
        help="top offenders, folded stacks and an HTML flame graph from JSON-lines logs",
        description="Summarize loophound's JSON-lines event logs: the lines that block the "
        "event loop, sorted by total blocked time.",
    )
    report.add_argument("files", nargs="+", metavar="EVENTS.jsonl", help="logs or globs")
    report.add_argument("--by", choices=GROUPINGS, default="culprit", help="group by")
    report.add_argument("--since", type=parse_since, default=None, help="30m, 2h, 1d or ISO time")
    report.add_argument("--top", type=_top, default=20, help="rows to show (default 20)")
    report.add_argument("--format", choices=FORMATS, default="table", help="table, json, csv")
    report.add_argument("--html", type=_output("--html"), default=None, help="write OUT.html")
    report.add_argument(
        "--folded", type=_output("--folded"), default=None, help="write folded stacks to OUT.txt"
    )


def _refuse_inputs(outputs: list[str | None], inputs: list[str]) -> None:
    taken = {os.path.realpath(p) for p in inputs}
    for out in outputs:
        if out is not None and os.path.realpath(out) in taken:
            raise ReportError(
                f"loophound report: refusing to write over {out!r}: it is one of the logs read"
            )


def _replace(path: str, write: Callable[[str], object]) -> None:
    """Write to a temporary file next to ``path``, then rename: never a half file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".loophound-", dir=directory)
    os.close(fd)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems[:_PROBLEMS_SHOWN]:
        print(f"loophound report: skipped {problem}", file=sys.stderr)
    if len(problems) > _PROBLEMS_SHOWN:
        print(
            f"loophound report: skipped {len(problems) - _PROBLEMS_SHOWN} more bad lines",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    """Run ``loophound report``; 2 when a file is missing or would be overwritten."""
    problems: list[Problem] = []
    try:
        files = expand(args.files)
        _refuse_inputs([args.html, args.folded], files)
        summary: Summary = summarize(read_records(files, problems), args.by, args.since)
    except ReportError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    _print_problems(problems)
    print(render(summary, args.format, args.top))
    if args.folded:
        _replace(args.folded, lambda path: write_folded(summary, path))
        print(f"folded stacks written to {args.folded}", file=sys.stderr)
    if args.html:
        from loophound.report.html import write_html  # noqa: PLC0415 - only for --html

        _replace(args.html, lambda path: write_html(summary, path, files, problems))
        print(f"HTML report written to {args.html}", file=sys.stderr)
    return 0
