"""``loophound report --html``: the report as one self-contained HTML page.

The page holds the offenders table, the source line of each top culprit, a timeline
of incidents per route (inline SVG, drawn here) and an interactive icicle flame graph
of the folded stacks, drawn in the browser by d3 and d3-flame-graph. Both libraries
are inlined from ``assets/`` (read with ``importlib.resources``): the page loads
nothing from the network. Everything but the flame graph reads without JavaScript.

Everything taken from a log is escaped. HTML text and attributes go through
``html.escape``, with control characters, lone surrogates, U+2028 and U+2029 shown as
``\\xNN``/``\\uNNNN``. The flame graph's data is JSON in a
``<script type="application/json">`` element, with ``<``, ``>``, ``&``, U+2028, U+2029
and lone surrogates written as ``\\uNNNN`` escapes, so no string can close the element;
the page's script reads it with ``JSON.parse`` and d3 writes it with ``textContent``.
A Content-Security-Policy lets only the page's own three scripts run (by hash): a
second line of defence.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import html
import json
import linecache
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from loophound._version import __version__
from loophound.report.aggregate import TIMELINE_STEP, Group, Summary
from loophound.report.reader import Problem

__all__ = [
    "GENERATOR",
    "VENDORED",
    "flame_tree",
    "render_html",
    "script_json",
    "source_lines",
    "write_html",
]

#: The vendored libraries: file under ``assets/``, name, version, licence.
VENDORED = (
    ("d3.min.js", "d3", "7.9.2", "ISC"),
    ("d3-flamegraph.umd.min.js", "d3-flame-graph", "5.0.0", "Apache-2.0"),
)
_APP_JS = "report.js"
_CSS = "report.css"

#: Rows of the offenders table and of the requests table.
TOP_ROWS = 100
#: Culprits whose source is shown.
TOP_SOURCES = 10
#: Lines of source shown before and after a culprit's line.
SOURCE_CONTEXT = 2
#: A source line is cut after this many characters.
SOURCE_LINE_CHARS = 400
#: Only these files are read for source lines: a log cannot make the report quote
#: an arbitrary file of the machine that renders it.
SOURCE_SUFFIXES = (".py", ".pyw")
#: Routes drawn in the timeline; the rest are drawn together as one.
TIMELINE_ROUTES = 12
#: Bars per route at most: a longer span puts several minutes in one bar.
TIMELINE_BARS = 240
#: Minutes the time axis spans at least.
TIMELINE_MIN_BARS = 30
#: Skipped lines listed one by one; the rest are counted.
PROBLEMS_SHOWN = 20
#: Nodes of the flame graph at most; lighter stacks beyond go into one frame.
FLAME_NODES = 30_000
#: Frames of one stack at most; the outermost ones beyond are folded into one frame.
FLAME_DEPTH = 200
#: Frames narrower than this (px) are not drawn.
MIN_FRAME_PX = 0.5
#: The flame graph's root frame.
ROOT_LABEL = "all"
OTHER_STACKS = "(lighter stacks)"

_OTHER_ROUTES = "(other routes)"
_UNSAFE_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_UNSAFE_SCRIPT = re.compile("[<>&\u2028\u2029\ud800-\udfff]")
_SCRIPT_END = re.compile(r"</script|</style|<!--|<script", re.IGNORECASE)
_SVG_WIDTH = 800
_SVG_HEIGHT = 48


# -- escaping -----------------------------------------------------------------------------


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _h(value: object) -> str:
    """Return ``value`` as HTML text or attribute value: escaped, controls made visible."""
    return html.escape(_UNSAFE_TEXT.sub(_visible, str(value)), quote=True)


def script_json(value: Any) -> str:
    """Return ``value`` as JSON that is safe inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` (which occur only inside JSON strings) and the characters
    that are line breaks to JavaScript or cannot be encoded become ``\\uNNNN``:
    the text can contain neither ``</script>`` nor ``<!--``.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _UNSAFE_SCRIPT.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# -- assets -------------------------------------------------------------------------------


@functools.cache
def _asset(name: str) -> str:
    text = resources.files("loophound.report").joinpath("assets", name).read_text("utf-8")
    if _SCRIPT_END.search(text):  # would end the inline <script> or <style> early
        raise RuntimeError(f"loophound: assets/{name} contains <script, </style or <!--")
    return text


def _script_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _scripts() -> list[str]:
    """Return the inline scripts in page order: the libraries, then the page's own."""
    scripts = []
    for name, package, version, licence in VENDORED:
        notice = f"/*! {package} {version} | {licence} | loophound/report/assets/{name} */\n"
        scripts.append(notice + _asset(name))
    scripts.append(_asset(_APP_JS))
    return scripts


def _policy(scripts: Iterable[str]) -> str:
    hashes = " ".join(_script_hash(s) for s in scripts)
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )


# -- numbers and names --------------------------------------------------------------------


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f}"


def _when(ns: int | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if ns is None:
        return ""
    try:
        return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime(fmt)
    except (OverflowError, OSError, ValueError):
        return str(ns)


def _short(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _top(counter: Mapping[str, int], limit: int) -> str:
    names = [name for name, _ in Counter(counter).most_common(limit)]
    more = len(counter) - len(names)
    return ", ".join(names) + (f" +{more} more" if more > 0 else "")


# -- the flame graph's data ---------------------------------------------------------------


@dataclass
class _Node:
    name: str
    value: int = 0
    children: dict[str, _Node] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        node: dict[str, Any] = {"n": self.name, "v": self.value}
        if self.children:
            ranked = sorted(self.children.values(), key=lambda c: (-c.value, c.name))
            node["c"] = [child.as_json() for child in ranked]
        return node


def _frames(stack: str, depth: int) -> list[str]:
    frames = stack.split(";") if stack else ["(no frames)"]
    if len(frames) > depth:
        hidden = len(frames) - depth + 1
        frames = [f"({hidden} outer frames not shown)", *frames[-(depth - 1) :]]
    return frames


def flame_tree(
    stacks: Mapping[str, float], max_nodes: int = FLAME_NODES, max_depth: int = FLAME_DEPTH
) -> dict[str, Any]:
    """Return folded stacks as d3-flame-graph's tree: ``{"n": name, "v": µs, "c": [...]}``.

    Weights are milliseconds; ``v`` is whole microseconds (at least 1 per stack), so a
    node's value is exactly the sum of its children's plus its own. Children are
    ordered heaviest first. At most ``max_nodes`` nodes: the lightest stacks that do
    not fit are counted in one ``(lighter stacks)`` frame under the root.
    """
    root = _Node(ROOT_LABEL)
    nodes = 1
    elided = 0
    budget = max(2, max_nodes) - 1  # one node is kept for the elided stacks
    for stack, weight in sorted(stacks.items(), key=lambda item: (-item[1], item[0])):
        micros = max(1, round(_finite(weight) * 1000))
        frames = _frames(stack, max(2, max_depth))
        node, new = root, 0
        for name in frames:
            child = node.children.get(name) if new == 0 else None
            if child is None:
                new += 1
            else:
                node = child
        if nodes + new > budget:
            elided += micros
            continue
        nodes += new
        root.value += micros
        node = root
        for name in frames:
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Node(name)
            child.value += micros
            node = child
    if elided:
        root.value += elided
        root.children[OTHER_STACKS] = _Node(OTHER_STACKS, elided)
    return root.as_json()


# -- sections -----------------------------------------------------------------------------


def _header(summary: Summary, files: Sequence[str], problems: Sequence[Problem]) -> str:
    span = ""
    if summary.first_seen is not None and summary.last_seen is not None:
        span = f" from {_h(_when(summary.first_seen))} to {_h(_when(summary.last_seen))} UTC"
    served = sum(r.count for r in summary.requests.values())
    groups = f"{_plural(len(summary.groups), 'group')} (by {_h(summary.by)})"
    parts = [
        f"{_plural(summary.incidents, 'incident')} in {groups}{span}",
        f"{_plural(summary.quiet, 'quiet module load')} not shown",
    ]
    if served:
        parts.append(f"{_plural(served, 'request')} served")
    parts.append(f"{_plural(len(files), 'log')} read")
    if problems:
        parts.append(f"{_plural(len(problems), 'bad line')} skipped")
    return (
        "<header>\n<h1>loophound report</h1>\n"
        f'<p class="summary">{"; ".join(parts)}.</p>\n'
        '<nav><a href="#offenders">Offenders</a><a href="#sources">Source</a>'
        '<a href="#flame-section">Flame graph</a><a href="#timeline">Timeline</a>'
        '<a href="#requests">Requests</a><a href="#inputs">Logs</a></nav>\n</header>\n'
    )


def _culprit_cell(group: Group) -> str:
    if group.file is None:
        return f"<code>{_h(group.key)}</code>"
    line = "?" if group.line is None else str(group.line)
    return (
        f'<code title="{_h(group.file)}:{_h(line)}">{_h(_short(group.file))}:{_h(line)}</code>'
        f'<br><span class="fn">{_h(group.function or "?")}</span>'
    )


def _offenders(summary: Summary) -> str:
    by = summary.by
    groups = summary.ranked(TOP_ROWS)
    last = "requests" if by == "route" else "routes"
    head = (
        f'<tr><th class="num">#</th><th>{_h(by)}</th><th>operations</th>'
        '<th class="num">count</th><th class="num">total s</th><th class="num">p50 ms</th>'
        '<th class="num">p99 ms</th><th class="num">max ms</th>'
        f"<th>{last}</th><th>first seen (UTC)</th><th>last seen (UTC)</th></tr>"
    )
    rows = []
    for rank, group in enumerate(groups, 1):
        name = _culprit_cell(group) if by == "culprit" else f"<code>{_h(group.key)}</code>"
        if by == "route":
            requests = summary.requests.get(group.key)
            tail = "" if requests is None else str(requests.count)
            tail_class = ' class="num"'
        else:
            tail = _h(_top(group.routes, 3))
            tail_class = ' class="wrap"'
        maximum = group.maximum if group.sketch.count else None
        rows.append(
            f'<tr><td class="num">{rank}</td><td>{name}</td>'
            f'<td class="wrap">{_h(_top(group.operations, 2))}</td>'
            f'<td class="num">{group.count}</td><td class="num">{group.total:.3f}</td>'
            f'<td class="num">{_ms(group.quantile(0.5))}</td>'
            f'<td class="num">{_ms(group.quantile(0.99))}</td>'
            f'<td class="num">{_ms(maximum)}</td><td{tail_class}>{tail}</td>'
            f'<td class="when">{_h(_when(group.first_seen))}</td>'
            f'<td class="when">{_h(_when(group.last_seen))}</td></tr>'
        )
    shown = ""
    if len(summary.groups) > len(groups):
        shown = f'<p class="note">The {len(groups)} heaviest of {len(summary.groups)} groups.</p>'
    if not rows:
        body = '<p class="note">No incidents in these logs.</p>'
    else:
        body = (
            '<div class="table-wrap"><table id="offenders-table">\n<thead>'
            + head
            + "</thead>\n<tbody>\n"
            + "\n".join(rows)
            + "\n</tbody></table></div>"
        )
    return (
        '<section id="offenders">\n<h2>Top offenders</h2>\n'
        '<p class="note">Sorted by total time the event loop was blocked.</p>\n'
        f"{body}\n{shown}</section>\n"
    )


def source_lines(file: str | None, line: int | None) -> list[tuple[int, str]] | None:
    """Return ``(number, text)`` around ``file:line``, or None when it cannot be read.

    Only existing regular ``.py`` files are read (``linecache``), so a log cannot make
    the report quote other files of the machine it is rendered on.
    """
    if file is None or line is None or line < 1:
        return None
    if not file.endswith(SOURCE_SUFFIXES) or not os.path.isfile(file):
        return None
    linecache.checkcache(file)
    if not linecache.getline(file, line):
        return None
    lines = []
    for number in range(max(1, line - SOURCE_CONTEXT), line + SOURCE_CONTEXT + 1):
        text = linecache.getline(file, number)
        if not text:
            break
        lines.append((number, text.rstrip("\r\n").expandtabs(4)[:SOURCE_LINE_CHARS]))
    return lines


def _sources(summary: Summary) -> str:
    intro = '<section id="sources">\n<h2>Source of the top culprits</h2>\n'
    if summary.by != "culprit":
        note = '<p class="note">Group by culprit (the default) to see source lines.</p>'
        return intro + note + "\n</section>\n"
    figures = []
    for rank, group in enumerate(summary.ranked(TOP_SOURCES), 1):
        if group.file is None:
            continue
        lines = source_lines(group.file, group.line)
        caption = (
            f"<figcaption>#{rank} <code>{_h(group.file)}:{_h(group.line or '?')}</code> in "
            f'<span class="fn">{_h(group.function or "?")}</span>: '
            f"{group.total:.3f} s blocked over {_plural(group.count, 'incident')}</figcaption>"
        )
        if lines is None:
            figures.append(
                f'<figure class="source">{caption}'
                '<p class="note">The file is not readable here.</p></figure>'
            )
            continue
        spans = []
        for number, text in lines:
            kind = "hit" if number == group.line else "ctx"
            spans.append(f'<span class="{kind}"><span class="ln">{number}</span>{_h(text)}</span>')
        figures.append(
            f'<figure class="source">{caption}<pre><code>{"".join(spans)}</code></pre></figure>'
        )
    if not figures:
        figures.append('<p class="note">No culprit has a known file.</p>')
    return intro + "\n".join(figures) + "\n</section>\n"


def _flame() -> str:
    return (
        '<section id="flame-section">\n<h2>Flame graph of blocked time</h2>\n'
        '<p class="note">The stacks that blocked the loop, weighted by milliseconds blocked, '
        "with the outermost frame at the top. Click a frame to zoom into it; hover for its "
        "weight.</p>\n"
        '<div id="flame-controls" hidden><button type="button" id="flame-reset">Reset zoom'
        '</button><input type="search" id="flame-search" placeholder="Find frames (text)" '
        'aria-label="Find frames"></div>\n'
        '<div id="flame-details" aria-live="polite"></div>\n<div id="flame"></div>\n'
        '<noscript><p class="note">The flame graph needs JavaScript. '
        "<code>loophound report --folded OUT.txt</code> writes the same stacks for "
        "flamegraph.pl or speedscope.</p></noscript>\n</section>\n"
    )


def _timeline(summary: Summary) -> str:
    intro = '<section id="timeline">\n<h2>Incidents per route over time</h2>\n'
    cells = summary.timeline
    if not cells:
        return intro + '<p class="note">No incidents in these logs.</p>\n</section>\n'
    totals: Counter[str] = Counter()
    for (route, _), count in cells.items():
        totals[route] += count
    ranked = sorted(totals, key=lambda r: (-totals[r], r))
    shown = ranked[:TIMELINE_ROUTES]
    merged = set(ranked[TIMELINE_ROUTES:])
    start = min(minute for _, minute in cells)
    end = max(minute for _, minute in cells)
    # A short log still gets a scale of TIMELINE_MIN_BARS minutes: one minute of
    # incidents is a narrow bar, not the whole width.
    minutes = max((end - start) // TIMELINE_STEP + 1, TIMELINE_MIN_BARS)
    per_bar = max(1, -(-minutes // TIMELINE_BARS))
    bar_ns = per_bar * TIMELINE_STEP
    bars = -(-minutes // per_bar)
    series: dict[str, Counter[int]] = {route: Counter() for route in shown}
    if merged:
        series[_OTHER_ROUTES] = Counter()
    for (route, minute), count in cells.items():
        key = _OTHER_ROUTES if route in merged else route
        series[key][(minute - start) // bar_ns] += count
    peak = max(max(counts.values()) for counts in series.values())
    width = _SVG_WIDTH / bars
    charts = []
    for route, counts in series.items():
        total = sum(counts.values())
        rects = []
        for index in sorted(counts):
            count = counts[index]
            height = max(1.0, (_SVG_HEIGHT - 2) * count / peak)
            since = start + index * bar_ns
            title = f"{route}: {_plural(count, 'incident')}, {_when(since, '%Y-%m-%d %H:%M')} UTC"
            if per_bar > 1:
                title += f" + {per_bar} min"
            rects.append(
                f'<rect x="{index * width:.3f}" y="{_SVG_HEIGHT - height:.3f}" '
                f'width="{max(width - 0.5, 0.5):.3f}" height="{height:.3f}">'
                f"<title>{_h(title)}</title></rect>"
            )
        charts.append(
            f'<div class="route"><span class="name">{_h(route)}</span> '
            f'<span class="note">{_plural(total, "incident")}</span>\n'
            f'<svg viewBox="0 0 {_SVG_WIDTH} {_SVG_HEIGHT}" preserveAspectRatio="none" '
            f'role="img" aria-label="{_h(route)}: incidents over time">'
            + "".join(rects)
            + "</svg></div>"
        )
    step = "1 minute" if per_bar == 1 else f"{per_bar} minutes"
    axis = (
        f'<div class="axis"><span>{_h(_when(start, "%Y-%m-%d %H:%M"))} UTC</span>'
        f"<span>one bar: {step}; bar heights share one scale (peak {peak})</span>"
        f"<span>{_h(_when(start + bars * bar_ns, '%Y-%m-%d %H:%M'))} UTC</span></div>"
    )
    return intro + "\n".join(charts) + "\n" + axis + "\n</section>\n"


def _requests(summary: Summary) -> str:
    intro = '<section id="requests">\n<h2>Requests served</h2>\n'
    if not summary.requests:
        return intro + '<p class="note">No request records in these logs.</p>\n</section>\n'
    ranked = sorted(summary.requests.items(), key=lambda item: (-item[1].count, item[0]))
    rows = [
        f'<tr><td><code>{_h(route)}</code></td><td class="num">{r.count}</td>'
        f'<td class="num">{r.hops}</td><td class="num">{r.wait:.3f}</td>'
        f'<td class="num">{r.run:.3f}</td></tr>'
        for route, r in ranked[:TOP_ROWS]
    ]
    return (
        intro + '<p class="note">Thread hops: calls that went to a worker thread '
        "(sync_to_async, run_in_executor); wait is the time spent queued for a thread.</p>\n"
        '<div class="table-wrap"><table id="requests-table"><thead><tr><th>route</th>'
        '<th class="num">requests</th><th class="num">thread hops</th>'
        '<th class="num">hop wait s</th><th class="num">hop run s</th></tr></thead>\n<tbody>'
        + "\n".join(rows)
        + "</tbody></table></div>\n</section>\n"
    )


def _inputs(files: Sequence[str], problems: Sequence[Problem]) -> str:
    items = "".join(f"<li><code>{_h(path)}</code></li>" for path in files)
    text = f'<section id="inputs">\n<h2>Logs read</h2>\n<ul class="files">{items}</ul>\n'
    if problems:
        listed = "".join(
            f"<li><code>{_h(p.path)}:{p.line}</code>: {_h(p.message)}</li>"
            for p in problems[:PROBLEMS_SHOWN]
        )
        more = len(problems) - PROBLEMS_SHOWN
        tail = f'<p class="note">and {more} more.</p>' if more > 0 else ""
        heading = f"<h3>{_plural(len(problems), 'line')} skipped</h3>"
        text += f'{heading}\n<ul class="files">{listed}</ul>{tail}\n'
    return text + "</section>\n"


def _footer() -> str:
    libraries = ", ".join(
        f"{_h(package)} {_h(version)} ({_h(licence)})" for _, package, version, licence in VENDORED
    )
    return (
        f"<footer>Made by loophound {_h(__version__)}. The flame graph is drawn by "
        f"{libraries}, inlined in this page; their licences ship in "
        "<code>loophound/report/assets/</code>.</footer>\n"
    )


# -- the page -----------------------------------------------------------------------------


#: The mark of a page loophound wrote (``loophound demo`` replaces only those).
GENERATOR = '<meta name="generator" content="loophound'


def render_html(
    summary: Summary, files: Sequence[str] = (), problems: Sequence[Problem] = ()
) -> str:
    """Return the whole report as one HTML document (every asset inlined)."""
    scripts = _scripts()
    data = {"flame": flame_tree(summary.stacks), "minFrameSize": MIN_FRAME_PX}
    body = (
        _header(summary, files, problems)
        + "<main>\n"
        + _offenders(summary)
        + _sources(summary)
        + _flame()
        + _timeline(summary)
        + _requests(summary)
        + _inputs(files, problems)
        + "</main>\n"
        + _footer()
    )
    inline = "".join(f"<script>{script}</script>\n" for script in scripts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_h(_policy(scripts))}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'{GENERATOR} {_h(__version__)}">\n'
        "<title>loophound report</title>\n"
        f"<style>\n{_asset(_CSS)}</style>\n</head>\n<body>\n"
        + body
        + f'<script type="application/json" id="loophound-data">{script_json(data)}</script>\n'
        + inline
        + "</body>\n</html>\n"
    )


def write_html(
    summary: Summary, path: str, files: Sequence[str] = (), problems: Sequence[Problem] = ()
) -> None:
    """Write the HTML report to ``path`` (UTF-8): one file that needs no network."""
    text = render_html(summary, files, problems)
    with open(path, "w", encoding="utf-8", errors="replace", newline="\n") as handle:
        handle.write(text)
