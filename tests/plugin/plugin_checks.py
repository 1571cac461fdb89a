"""What the plugin's tests share: a throwaway pytest project and checks of its output."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

#: Upper bound, in seconds, of one pytest subprocess (they take about a second).
RUN_BOUND = 90.0


class Project:
    """A pytest project in ``pytester.path``: its ini file, its files, its runs."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path: Path = pytester.path

    def ini(self, *lines: str, asyncio_mode: str = "auto") -> None:
        """Write pytest.ini: pytest-asyncio settled (no warning), the project importable."""
        text = "\n".join(
            [
                "[pytest]",
                f"asyncio_mode = {asyncio_mode}",
                "asyncio_default_fixture_loop_scope = function",
                "pythonpath = .",
                *lines,
            ]
        )
        self.pytester.makefile(".ini", pytest=text + "\n")

    def write(self, name: str, source: str) -> Path:
        """Write a file of the project (source is dedented)."""
        path = self.path / name
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        return path

    def location(self, name: str, marker: str) -> str:
        """Return ``file:line`` of the one line of ``name`` that contains ``marker``."""
        path = self.path / name
        lines = path.read_text(encoding="utf-8").splitlines()
        found = [number for number, line in enumerate(lines, 1) if marker in line]
        assert len(found) == 1, f"{marker!r} is on lines {found} of {name}"
        return f"{path}:{found[0]}"

    def run(self, *args: str) -> pytest.RunResult:
        """Run pytest in a subprocess in the project, bounded by RUN_BOUND."""
        return self.pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", *args, timeout=RUN_BOUND
        )


def section(result: pytest.RunResult, title: str) -> list[str]:
    """Return the lines under the ``=== title ===`` separator, up to the next separator."""
    lines = result.stdout.lines
    starts = [i for i, line in enumerate(lines) if re.fullmatch(rf"=+ {re.escape(title)} =+", line)]
    assert len(starts) == 1, f"{title!r} is shown {len(starts)} times:\n{result.stdout.str()}"
    body = []
    for line in lines[starts[0] + 1 :]:
        if re.fullmatch(r"=+ .* =+", line):
            break
        body.append(line)
    return body


def expect_lines(result: pytest.RunResult, *patterns: str) -> None:
    """Each pattern matches some line of stdout, in any order (fnmatch)."""
    for pattern in patterns:
        result.stdout.fnmatch_lines([pattern])


def report(result: pytest.RunResult, title: str) -> pytest.LineMatcher:
    """Return the lines of the failure or error report ``title`` (``___ title ___``)."""
    lines = result.stdout.lines
    heads = [
        i
        for i, line in enumerate(lines)
        if re.fullmatch(rf"_{{3,}} {re.escape(title)} _{{3,}}", line)
    ]
    assert len(heads) == 1, f"report {title!r} is shown {len(heads)} times:\n{result.stdout.str()}"
    body = []
    for line in lines[heads[0] + 1 :]:
        if re.fullmatch(r"(_{3,}|={3,}) .* (_{3,}|={3,})", line):
            break
        body.append(line)
    return pytest.LineMatcher(body)


def expect_report(result: pytest.RunResult, title: str, *lines: str) -> None:
    """The failure or error report ``title`` starts with exactly ``lines`` (fnmatch)."""
    body = report(result, title).lines
    assert len(body) >= len(lines), f"report {title!r} is too short:\n" + "\n".join(body)
    pytest.LineMatcher(body[: len(lines)]).fnmatch_lines(list(lines), consecutive=True)
