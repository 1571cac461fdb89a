"""The HTML report: content of a real demo log, self-containment, and escaping of hostile logs."""

from __future__ import annotations

import base64
import hashlib
import json
import linecache
import random
import re
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from report_data import HOSTILE, Page, make_summary, names, read_page

from loophound.report import Summary, read_records, summarize
from loophound.report.aggregate import TIMELINE_STEP, frame_label
from loophound.report.html import (
    FLAME_DEPTH,
    OTHER_STACKS,
    ROOT_LABEL,
    TIMELINE_BARS,
    TIMELINE_ROUTES,
    VENDORED,
    flame_tree,
    render_html,
    script_json,
    source_lines,
)

#: Every tag the report writes; an injected one would be outside this set.
REPORT_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "nav",
    "a", "main", "section", "div", "table", "thead", "tbody", "tr", "th", "td", "code", "br",
    "span", "figure", "figcaption", "pre", "button", "input", "noscript", "svg", "rect", "ul",
    "li", "footer", "script",
}  # fmt: skip
#: Every attribute the report writes.
REPORT_ATTRIBUTES = {
    "lang", "charset", "http-equiv", "content", "name", "href", "class", "id", "title", "type",
    "hidden", "placeholder", "aria-label", "aria-live", "viewbox", "preserveaspectratio",
    "role", "x", "y", "width", "height",
}  # fmt: skip
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def shown(text: str) -> str:
    """Return ``text`` as the report shows it: control characters as ``\\xNN``/``\\uNNNN``."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"

    return _INVISIBLE.sub(escape, text)


def micros(weight_ms: float) -> int:
    """Return a folded stack's weight as the flame tree counts it."""
    return max(1, round(weight_ms * 1000))


def check_sums(node: dict[str, Any]) -> None:
    """Assert that no node of a flame tree weighs less than its children together."""
    stack = [node]
    while stack:
        current = stack.pop()
        children = current.get("c", [])
        assert current["v"] >= sum(child["v"] for child in children) > -1
        assert [c["v"] for c in children] == sorted((c["v"] for c in children), reverse=True)
        stack.extend(children)


# -- the real demo log ----------------------------------------------------------------------


def test_demo_report_shows_every_culprit_its_source_line_and_route(
    demo_html: Path, demo_log: Path
) -> None:
    """Every culprit of the demo log appears with its function, source line and route."""
    page = read_page(demo_html)
    text = page.all_text
    summary, _ = make_summary(demo_log)
    assert summary.groups
    for group in summary.ranked():
        assert group.file is not None
        assert group.line is not None
        assert f"views.py:{group.line}" in text
        assert group.function is not None
        assert group.function in text
        source = linecache.getline(group.file, group.line).strip()
        assert source
        assert source in text
        for route in group.routes:
            assert route in text
    assert "blocking/items/<int:pk>/" in text
    assert "blocking/items/&lt;int:pk&gt;/" in demo_html.read_text(encoding="utf-8")
    assert f"{summary.incidents} incidents" in text


def test_demo_report_is_self_contained(demo_html: Path) -> None:
    """The page loads nothing: no src, no external href, no link, no CSS url, a CSP of 'none'."""
    page = read_page(demo_html)
    for tag, attrs in page.tags:
        assert tag not in {"link", "img", "iframe", "object", "embed", "base", "form"}
        assert "src" not in attrs, (tag, attrs)
        href = attrs.get("href")
        assert href is None or href.startswith("#"), (tag, attrs)
        for value in attrs.values():
            assert not re.search(r"https?://", value or ""), (tag, attrs)
    for style in page.styles:
        assert "url(" not in style
        assert "@import" not in style
    policies = [
        a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert len(policies) == 1
    assert policies[0] is not None
    assert policies[0].startswith("default-src 'none'; script-src 'sha256-")
    assert "connect-src" not in policies[0]  # default-src 'none' covers fetch and XHR


def test_only_the_vendored_libraries_and_the_page_script_may_run(demo_html: Path) -> None:
    """The inline scripts are d3, d3-flame-graph and report.js, each allowed by its hash only."""
    page = read_page(demo_html)
    code = [content for attrs, content in page.scripts if attrs.get("type") is None]
    assert len(code) == 3
    assets = resources.files("loophound.report") / "assets"
    expected = [name for name, *_ in VENDORED] + ["report.js"]
    for content, name in zip(code, expected, strict=True):
        assert content.endswith((assets / name).read_text("utf-8"))
    (policy,) = [a["content"] for _, a in page.tags if a.get("http-equiv")]
    assert policy is not None
    allowed = set(re.findall(r"'sha256-([A-Za-z0-9+/=]+)'", policy))
    hashes = {base64.b64encode(hashlib.sha256(c.encode()).digest()).decode() for c in code}
    assert allowed == hashes
    data = [attrs for attrs, _ in page.scripts if attrs.get("type") is not None]
    assert data == [{"type": "application/json", "id": "loophound-data"}]


def test_vendored_assets_ship_with_their_licences() -> None:
    """Each vendored file, its licence text and the README naming its version are packaged."""
    assets = resources.files("loophound.report") / "assets"
    readme = (assets / "README.md").read_text("utf-8")
    for name, package, version, licence in VENDORED:
        assert (assets / name).read_text("utf-8")
        assert (assets / f"LICENSE-{package}.txt").read_text("utf-8").strip()
        assert f"`{name}` | [{package}]" in readme
        assert f"| {version} | {licence} " in readme
        assert f"npm pack {package}@{version}" in readme
    for bundled in ("internmap", "delaunator", "robust-predicates"):
        assert (assets / f"LICENSE-{bundled}.txt").read_text("utf-8").strip()
    assert "d3js.org v7.9.2" in (assets / "d3.min.js").read_text("utf-8")[:200]


def test_flame_data_of_the_demo_holds_every_folded_stack(demo_html: Path, demo_log: Path) -> None:
    """The embedded tree has every stack of the log as a path, weighted in µs, sums exact."""
    summary, _ = make_summary(demo_log)
    tree = read_page(demo_html).data()["flame"]
    assert tree["n"] == ROOT_LABEL
    assert tree["v"] == sum(micros(w) for w in summary.stacks.values())
    check_sums(tree)
    for stack in summary.stacks:
        node = tree
        for frame in stack.split(";"):
            node = next(child for child in node["c"] if child["n"] == frame)
    culprits = {f"{g.function}\u00a0(" for g in summary.groups.values()}
    assert any(name.startswith(tuple(culprits)) for name in names(tree))


def test_report_command_writes_the_html_page(demo_log: Path, tmp_path: Path) -> None:
    """`loophound report LOG --html OUT` writes the page: the CLI's path into write_html."""
    out = tmp_path / "out.html"
    done = subprocess.run(
        [sys.executable, "-m", "loophound.cli", "report", str(demo_log), "--html", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"HTML report written to {out}" in done.stderr
    page = read_page(out)
    assert any(attrs.get("id") == "offenders-table" for _, attrs in page.tags)
    assert page.data()["flame"]["v"] > 0


def test_other_groupings_render_without_source_lines(demo_log: Path) -> None:
    """Grouped by route or operation, the table names the groups and says where sources are."""
    for by in ("route", "operation"):
        summary = summarize(read_records([str(demo_log)], []), by)
        text = Page(render_html(summary)).all_text
        assert "Group by culprit (the default) to see source lines." in text
        for group in summary.groups.values():
            assert group.key in text


# -- hostile logs ---------------------------------------------------------------------------


def test_hostile_strings_inject_no_tag_attribute_or_script(hostile_html: Path) -> None:
    """Markup in every log field stays text: only the report's own tags and attributes exist."""
    document = hostile_html.read_text(encoding="utf-8")
    page = Page(document)
    tags = Counter(tag for tag, _ in page.tags)
    assert set(tags) <= REPORT_TAGS, set(tags) - REPORT_TAGS
    assert tags["script"] == 4
    assert tags["style"] == 1
    assert tags["img"] == 0
    for tag, attrs in page.tags:
        assert set(attrs) <= REPORT_ATTRIBUTES, (tag, attrs)
        if tag == "a":
            assert (attrs.get("href") or "").startswith("#")
    assert page.comments == []
    for text in HOSTILE:
        if re.search("[<>&\"'\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]", text):
            assert text not in document, text
    code = "".join(content for attrs, content in page.scripts if attrs.get("type") is None)
    assert "__pwned" not in code


def test_hostile_strings_are_shown_as_text(hostile_html: Path) -> None:
    """Each hostile string reads back from the page's text exactly, controls made visible."""
    text = Page(hostile_html.read_text(encoding="utf-8")).all_text
    for hostile in HOSTILE:
        assert shown(hostile) in text, hostile
    assert "\\x00" in text
    assert "\\u2028" in text
    assert "\\ud800" in text
    assert "<img src=x onerror=alert(1)>.jsonl" in text  # the log's own name
    assert "unknown schema version '<script>alert(1)</script>'" in text  # a skipped line


def test_hostile_strings_round_trip_through_the_embedded_json(hostile_html: Path) -> None:
    """The flame graph's JSON holds no <, >, &, U+2028/9 raw and parses back to the same strings."""
    page = Page(hostile_html.read_text(encoding="utf-8"))
    (raw,) = [content for attrs, content in page.scripts if attrs.get("id") == "loophound-data"]
    assert not re.search("[<>&\u2028\u2029\ud800-\udfff]", raw)
    frames = set(names(page.data()["flame"]))
    for index, hostile in enumerate(HOSTILE):
        if index % 2:  # sampled stacks: the frame is the string itself
            assert hostile in frames, hostile
        else:  # frames: labelled function (file:line)
            label = frame_label({"file": hostile, "line": index, "function": hostile})
            assert label in frames, label


def test_script_json_survives_random_hostile_strings() -> None:
    """Strings drawn from a dangerous alphabet never end a script and parse back unchanged."""
    alphabet = [
        *"<>&/!-'\"\\ \t\n\r\x00\x1b\u2028\u2029\ud800\udfff",
        *("</script>", "<!--", "<script>", "]]>", "\u00a0", "é", "😀"),
    ]
    chooser = random.Random(20261124)  # noqa: S311 - a fixed seed makes a failure repeatable
    values: list[str] = list(HOSTILE)
    values.extend(
        "".join(chooser.choice(alphabet) for _ in range(chooser.randint(0, 24))) for _ in range(500)
    )
    for value in values:
        document = {"n": value, "c": [{"n": value, "v": 1}], value: [value]}
        text = script_json(document)
        assert not re.search("[<>&\u2028\u2029\ud800-\udfff]", text), text
        assert "</script" not in text.lower()
        # What JSON itself makes of the value: a high and a low surrogate side by side
        # read back as the one character they encode, in Python as in JavaScript.
        assert json.loads(text) == json.loads(json.dumps(document))


# -- the flame tree, sources, timeline ------------------------------------------------------


def test_flame_tree_nests_stacks_heaviest_first_in_microseconds() -> None:
    """Folded stacks become a tree whose values are exact sums of µs, children heaviest first."""
    tree = flame_tree({"a;b": 1.5, "a;c": 2.0, "a": 0.25, "d": 0.0001})
    assert tree == {
        "n": ROOT_LABEL,
        "v": 3751,
        "c": [
            {"n": "a", "v": 3750, "c": [{"n": "c", "v": 2000}, {"n": "b", "v": 1500}]},
            {"n": "d", "v": 1},
        ],
    }


def test_flame_tree_is_bounded_in_nodes_and_depth() -> None:
    """A huge or deep set of stacks is capped; what does not fit is still counted."""
    stacks = {f"root;f{i};g{i}": float(i + 1) for i in range(100)}
    tree = flame_tree(stacks, max_nodes=50)
    assert len(names(tree)) <= 50
    assert tree["v"] == sum(micros(w) for w in stacks.values())
    lighter = [child for child in tree["c"] if child["n"] == OTHER_STACKS]
    assert len(lighter) == 1
    assert lighter[0]["v"] > 0
    check_sums(tree)

    deep = flame_tree({";".join(f"f{i}" for i in range(1000)): 1.0})
    node, depth = deep, 0
    while "c" in node:
        node, depth = node["c"][0], depth + 1
        if depth == 1:
            assert node["n"] == f"({1000 - FLAME_DEPTH + 1} outer frames not shown)"
    assert depth == FLAME_DEPTH
    assert node["n"] == "f999"
    json.loads(script_json(deep))  # nesting stays within what json can write


def test_source_lines_reads_python_files_only(tmp_path: Path) -> None:
    """Source lines come from existing .py files with context; other files are never read."""
    module = tmp_path / "module.py"
    module.write_text("one = 1\ntwo = 2\nthree = 3\nfour = 4\nfive = 5\nsix = 6\n")
    assert source_lines(str(module), 3) == [
        (1, "one = 1"), (2, "two = 2"), (3, "three = 3"), (4, "four = 4"), (5, "five = 5"),
    ]  # fmt: skip
    assert source_lines(str(module), 6) == [(4, "four = 4"), (5, "five = 5"), (6, "six = 6")]
    assert source_lines(str(module), 7) is None
    assert source_lines(str(module), 0) is None
    secret = tmp_path / "secret.txt"
    secret.write_text("password = hunter2\n")
    assert source_lines(str(secret), 1) is None
    assert source_lines(str(tmp_path / "missing.py"), 1) is None
    assert source_lines(str(tmp_path), 1) is None


def test_timeline_caps_routes_and_bars() -> None:
    """Many routes over days: the top routes drawn, the rest merged, bars per route bounded."""
    summary = Summary("culprit")
    start = 1_795_535_220_000_000_000
    for route in range(20):
        for minute in range(0, 3 * 24 * 60, 7):
            summary.timeline[(f"/r{route}/", start + minute * TIMELINE_STEP)] += route + 1
    page = Page(render_html(summary))
    charts = [attrs for tag, attrs in page.tags if tag == "svg"]
    assert len(charts) == TIMELINE_ROUTES + 1
    assert "(other routes)" in page.all_text
    assert "/r19/" in page.all_text  # the busiest route is drawn
    rects = sum(1 for tag, _ in page.tags if tag == "rect")
    assert 0 < rects <= len(charts) * TIMELINE_BARS


def test_empty_summary_renders_a_page_that_says_so() -> None:
    """A log without incidents still makes a valid page, with an empty flame tree."""
    page = Page(render_html(Summary("culprit")))
    assert "No incidents in these logs." in page.all_text
    assert page.data()["flame"] == {"n": ROOT_LABEL, "v": 0}
