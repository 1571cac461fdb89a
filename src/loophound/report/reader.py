"""Stream records out of JSON-lines logs; bad lines are reported and skipped."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from loophound.sinks.jsonl import SCHEMA_VERSION

__all__ = ["KINDS", "Problem", "ReportError", "expand", "read_records"]

#: Record kinds a report reads: incidents, and served requests (thread hops).
KINDS = frozenset({"call", "stall", "slow_callback", "request"})


class ReportError(Exception):
    """A report cannot be made at all (a missing file): the CLI exits with 2."""


@dataclass(frozen=True)
class Problem:
    """One line that was skipped, and why."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def expand(patterns: Iterable[str]) -> list[str]:
    """Return the files the arguments name (globs expanded), or raise ``ReportError``."""
    files: list[str] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matched = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not matched:
                raise ReportError(f"loophound report: no file matches {pattern!r}")
            files.extend(matched)
        elif os.path.isdir(pattern):
            raise ReportError(f"loophound report: {pattern!r} is a directory; give a .jsonl file")
        elif not os.path.isfile(pattern):
            raise ReportError(f"loophound report: no such file: {pattern!r}")
        else:
            files.append(pattern)
    return list(dict.fromkeys(files))


def read_records(files: Iterable[str], problems: list[Problem]) -> Iterator[dict[str, Any]]:
    """Yield the valid records of every file, in order; append a Problem per bad line."""
    for path in files:
        try:
            handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as exc:
            raise ReportError(f"loophound report: cannot read {path!r}: {exc.strerror}") from None
        with handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                record = _parse(line, path, number, problems)
                if record is not None:
                    yield record


def _parse(line: str, path: str, number: int, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        problems.append(Problem(path, number, f"not valid JSON ({exc.msg})"))
        return None
    except ValueError as exc:  # e.g. a number too long to convert
        problems.append(Problem(path, number, f"not valid JSON ({exc})"))
        return None
    if not isinstance(record, dict):
        problems.append(Problem(path, number, "not a JSON object"))
        return None
    schema = record.get("schema")
    if schema != SCHEMA_VERSION:
        text = f"unknown schema version {schema!r} (this reads {SCHEMA_VERSION})"
        problems.append(Problem(path, number, text))
        return None
    kind = record.get("kind")
    if kind not in KINDS:
        problems.append(Problem(path, number, f"unknown kind {kind!r}"))
        return None
    if not isinstance(record.get("started_at"), int):
        problems.append(Problem(path, number, "no integer started_at"))
        return None
    return record
