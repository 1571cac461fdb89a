"""Data of the HTML report's tests: hostile strings, and logs that carry them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from loophound.report import Problem, Summary, read_records, summarize
from loophound.sinks.jsonl import SCHEMA_VERSION

#: Strings that would inject markup or script if a report wrote them unescaped.
HOSTILE = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</script><script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    "<!--<script>window.__pwned=1//",
    "</style><style>body{display:none}</style>",
    "quote\"s, 'apostrophes' & &amp; ampersands",
    "control\x00\x01\x07\x08\x0b\x0c\r\x1b[31m\x7f\x85\x9f characters",
    "line\u2028separator\u2029paragraph",
    "lone \ud800 surrogate",
    "javascript:alert(1)",
)


def _hostile_record(index: int, text: str) -> dict[str, Any]:
    """One incident whose every log-supplied string is ``text``.

    Odd ones carry sampled stacks (``samples``), even ones only ``frames``: the report
    builds its stacks from either.
    """
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "kind": "stall" if index % 2 else "call",
        "operation": text,
        "detail": text,
        "started_at": 1_795_535_221_000_000_000 + index * 90_000_000_000,
        "duration": 0.05 + index / 100,
        "culprit": {"file": f"/srv/{text}.py", "line": 10 + index, "function": text},
        "frames": [
            {"file": "/srv/app.py", "line": 1, "function": "main"},
            {"file": text, "line": index, "function": text},
        ],
        "fingerprint": f"hostile-{index}",
        "request": {"id": str(index), "type": "http", "method": "GET", "path": text, "route": text},
        "quiet": False,
        "suppressed": 0,
        "pid": 4242,
    }
    if index % 2:
        record["samples"] = {f"main;{text}": 3, f"main;{text};{text}": 1}
    return record


def hostile_records() -> Iterator[dict[str, Any]]:
    """Yield incidents and requests that carry every hostile string in every field."""
    for index, text in enumerate(HOSTILE):
        yield _hostile_record(index, text)
        yield {
            "schema": SCHEMA_VERSION,
            "kind": "request",
            "request": {"id": str(index), "route": text, "path": text},
            "started_at": 1_795_535_221_000_000_000,
            "duration": 0.1,
            "thread_hops": {"count": 1, "wait": 0.001, "run": 0.002},
            "pid": 4242,
        }
    # A timestamp far outside what datetime can show: the report must still render.
    far = _hostile_record(len(HOSTILE), HOSTILE[0])
    far["started_at"] = 10**25
    yield far


def make_summary(path: Path) -> tuple[Summary, list[Problem]]:
    """Return the summary of one log, as `loophound report` makes it, and its bad lines."""
    problems: list[Problem] = []
    return summarize(read_records([str(path)], problems)), problems


class Page(HTMLParser):
    """An HTML report as the tests see it: its tags, attributes, text and scripts."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.comments: list[str] = []
        self._open: tuple[str, dict[str, str | None]] | None = None
        self._chunks: list[str] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in {"script", "style"}:
            self._open = (tag, dict(attrs))
            self._chunks = []

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == self._open[0]:
            content = "".join(self._chunks)
            if tag == "script":
                self.scripts.append((self._open[1], content))
            else:
                self.styles.append(content)
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._chunks.append(data)
        else:
            self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    @property
    def all_text(self) -> str:
        """The text a reader sees, character references resolved."""
        return "".join(self.text)

    def data(self) -> dict[str, Any]:
        """The JSON of the ``<script type="application/json" id="loophound-data">``."""
        found = [
            content
            for attrs, content in self.scripts
            if attrs.get("id") == "loophound-data" and attrs.get("type") == "application/json"
        ]
        assert len(found) == 1
        value = json.loads(found[0])
        assert isinstance(value, dict)
        return value


def read_page(path: Path) -> Page:
    """Parse the HTML file at ``path`` (strict UTF-8)."""
    return Page(path.read_text(encoding="utf-8"))


def names(tree: dict[str, Any]) -> list[str]:
    """Return the names of every node of a flame tree (iteratively: trees can be deep)."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        found.append(node["n"])
        stack.extend(node.get("c", ()))
    return found
