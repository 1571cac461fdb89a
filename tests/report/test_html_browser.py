"""The HTML report in headless Chromium: the flame graph draws, hovers and zooms; logs run nothing.

Chromium is Debian's package (scripts/ensure-chromium installs it when missing, or
``CHROMIUM_BINARY`` names the binary); Playwright drives it through
``executable_path`` and never downloads a browser of its own. Screenshots are kept in
the test's tmp path and copied to ``artifacts/`` at the repository's root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from report_data import HOSTILE, make_summary, read_page

from loophound.report.html import MIN_FRAME_PX, ROOT_LABEL

#: The binary to use; when unset, scripts/ensure-chromium finds or installs one. When
#: set (scripts/test sets it), a missing Playwright is an error, not a skip. (Not a
#: LOOPHOUND_ name: loophound refuses unknown LOOPHOUND_ settings in its environment.)
CHROMIUM_ENV = "CHROMIUM_BINARY"

try:
    from playwright.sync_api import Browser, Locator, Page, sync_playwright
except ImportError:
    if os.environ.get(CHROMIUM_ENV):
        raise
    pytest.skip("playwright is not installed (it is in the test extras)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "scripts" / "ensure-chromium"
ARTIFACTS = ROOT / "artifacts"
#: Upper bound of scripts/ensure-chromium (apt-get update and install on a cold machine).
INSTALL_BOUND = 900.0
#: Upper bound of any one wait in the browser (ms).
WAIT_MS = 10_000
VIEWPORT = {"width": 1400, "height": 900}

# The first test may wait for scripts/ensure-chromium to install Chromium (when
# CHROMIUM_BINARY is not set); pytest's bound of 120 s per test would cut that short.
# Every wait in the browser stays bounded by WAIT_MS.
pytestmark = pytest.mark.timeout(INSTALL_BOUND + 120)

#: How many frames the chart drew, and the root's and the whole chart's width.
_FRAMES_JS = """() => {
  const svg = document.querySelector('#flame svg');
  if (!svg) return null;
  const rects = svg.querySelectorAll('g.frame rect');
  const root = [...svg.querySelectorAll('g.frame')].find(g => g.getAttribute('name') === 'all');
  return {
    frames: rects.length,
    width: Number(svg.getAttribute('width')),
    root: root ? Number(root.querySelector('rect').getAttribute('width')) : null,
    labels: [...svg.querySelectorAll('.d3-flame-graph-label')].map(e => e.textContent),
  };
}"""
#: The ``g.frame`` called ``name`` (the first one), as JS.
_FRAME_JS = """[...document.querySelectorAll('#flame g.frame')].find(
  g => g.getAttribute('name') === name)"""


@dataclass
class Tab:
    """A page of the report, with what it said on its console and any dialog it opened."""

    page: Page
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def frame(self, name: str) -> Locator:
        """Return the drawn frame called ``name`` (frames are found by name: zooming
        removes hidden frames, so their order changes)."""
        index = self.page.evaluate(
            f"""(name) => [...document.querySelectorAll('#flame g.frame')].indexOf({_FRAME_JS})""",
            name,
        )
        assert isinstance(index, int)
        assert index >= 0, f"no frame named {name!r}"
        return self.page.locator("#flame g.frame").nth(index)

    def frame_width(self, name: str) -> float:
        """Return the drawn width (px) of the frame called ``name``."""
        width = self.page.evaluate(
            f"(name) => Number(({_FRAME_JS}).querySelector('rect').getAttribute('width'))",
            name,
        )
        return float(width)

    def wait_width(self, name: str, width: float) -> None:
        """Wait (bounded) until the frame ``name`` is ``width`` px wide, within half a pixel."""
        self.page.wait_for_function(
            f"""([name, width]) => {{
              const g = {_FRAME_JS};
              const rect = g && g.querySelector('rect');
              return !!rect && Math.abs(Number(rect.getAttribute('width')) - width) < 0.5;
            }}""",
            arg=[name, width],
            timeout=WAIT_MS,
        )


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a Chromium binary: $CHROMIUM_BINARY, or what ensure-chromium prints."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        assert os.access(given, os.X_OK), f"{CHROMIUM_ENV}={given!r} is not an executable file"
        return given
    try:
        done = subprocess.run(
            ["bash", str(ENSURE)],
            capture_output=True,
            text=True,
            timeout=INSTALL_BOUND,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"scripts/ensure-chromium took more than {INSTALL_BOUND:.0f} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        pytest.skip(f"scripts/ensure-chromium failed: {done.stderr.strip()[-800:]}")
    return lines[-1]


# Module scope, not session: Playwright's sync API keeps an event loop marked running
# on the main thread while it is open, and the tests after this module must not see it.
@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    """Headless Chromium (the system's binary, never a downloaded one), for this module."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, timeout=60_000
        )
        yield launched
        launched.close()


@pytest.fixture
def open_report(browser: Browser) -> Iterator[Callable[[Path], Tab]]:
    """Open an HTML file in a fresh browser context; console errors and dialogs are recorded."""
    contexts = []

    def open_(path: Path) -> Tab:
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        tab = Tab(page)

        def on_console(message: Any) -> None:
            if message.type == "error":
                tab.errors.append(message.text)

        def on_dialog(dialog: Any) -> None:
            tab.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("console", on_console)
        page.on("pageerror", lambda error: tab.errors.append(f"page error: {error}"))
        page.on("dialog", on_dialog)
        page.goto(path.as_uri(), wait_until="load", timeout=WAIT_MS)
        page.wait_for_function(
            f"() => ({_FRAMES_JS})()?.labels.includes({ROOT_LABEL!r})", timeout=WAIT_MS
        )
        return tab

    yield open_
    for context in contexts:
        context.close()


def keep_screenshot(tab: Tab, tmp_path: Path, name: str) -> Path:
    """Save a full-page screenshot in tmp_path and copy it to artifacts/; return the copy."""
    shot = tmp_path / name
    tab.page.screenshot(path=str(shot), full_page=True, timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    kept = ARTIFACTS / name
    shutil.copyfile(shot, kept)
    assert kept.stat().st_size > 10_000
    return kept


def tree_nodes(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every node of a flame tree."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.get("c", ()))
    return found


def test_flame_graph_draws_every_visible_frame_with_the_root_on_top(
    open_report: Callable[[Path], Tab], demo_html: Path, tmp_path: Path
) -> None:
    """The demo's flame graph draws one rectangle per frame wider than the minimum, root first."""
    tab = open_report(demo_html)
    tab.page.wait_for_function(f"() => ({_FRAMES_JS})().root === ({_FRAMES_JS})().width")
    drawn = tab.page.evaluate(_FRAMES_JS)
    tree = read_page(demo_html).data()["flame"]
    width = drawn["width"]
    expected = [n for n in tree_nodes(tree) if n["v"] / tree["v"] * width > MIN_FRAME_PX]
    assert drawn["frames"] == len(expected) > 10
    assert ROOT_LABEL in drawn["labels"]
    # Icicle: the root is the top row, its children below it.
    root_y = tab.frame(ROOT_LABEL).bounding_box()
    assert root_y is not None
    boxes = [
        tab.page.locator("#flame g.frame rect").nth(i).bounding_box()
        for i in range(drawn["frames"])
    ]
    assert all(box is not None and box["y"] >= root_y["y"] for box in boxes)
    keep_screenshot(tab, tmp_path, "report-demo.png")
    assert tab.errors == []


def test_hovering_a_frame_shows_its_blocked_milliseconds_and_share(
    open_report: Callable[[Path], Tab], demo_html: Path
) -> None:
    """Hovering the top culprit's frame shows a tooltip with its name, ms blocked and share."""
    tree = read_page(demo_html).data()["flame"]
    nodes = tree_nodes(tree)
    culprit = max(
        (n for n in nodes if n["n"].startswith("blocking_json\u00a0(")), key=lambda n: n["v"]
    )
    assert sum(1 for n in nodes if n["n"] == culprit["n"]) == 1
    tab = open_report(demo_html)
    tab.frame(culprit["n"]).hover(timeout=WAIT_MS)
    tip = tab.page.locator(".d3-flame-graph-tip")
    tip.wait_for(state="visible", timeout=WAIT_MS)
    text = tip.inner_text(timeout=WAIT_MS)
    assert culprit["n"] in text
    match = re.search(r"([\d.]+) ms blocked, ([\d.]+)% of all", text)
    assert match, text
    assert float(match.group(1)) == pytest.approx(culprit["v"] / 1000, rel=0.01)
    assert float(match.group(2)) == pytest.approx(100 * culprit["v"] / tree["v"], abs=0.06)
    assert "ms blocked" in tab.page.locator("#flame-details").inner_text(timeout=WAIT_MS)
    assert tab.errors == []


def test_clicking_a_frame_zooms_it_to_the_full_width_and_reset_undoes_it(
    open_report: Callable[[Path], Tab], demo_html: Path, tmp_path: Path
) -> None:
    """A clicked frame widens to the chart's width, its ancestors fade; Reset zoom restores."""
    tree = read_page(demo_html).data()["flame"]
    nodes = tree_nodes(tree)
    culprit = max(
        (n for n in nodes if n["n"].startswith("blocking_sleep\u00a0(")), key=lambda n: n["v"]
    )
    assert sum(1 for n in nodes if n["n"] == culprit["n"]) == 1
    tab = open_report(demo_html)
    full = float(tab.page.evaluate(_FRAMES_JS)["width"])
    name = culprit["n"]
    tab.wait_width(name, culprit["v"] / tree["v"] * full)
    before = tab.frame_width(name)
    assert 20 < before < full - 20

    tab.frame(name).click(timeout=WAIT_MS)
    tab.wait_width(name, full)
    assert "fade" in (tab.frame(ROOT_LABEL).get_attribute("class") or "").split()
    keep_screenshot(tab, tmp_path, "report-demo-zoomed.png")

    tab.page.locator("#flame-reset").click(timeout=WAIT_MS)
    tab.wait_width(name, before)
    assert "fade" not in (tab.frame(ROOT_LABEL).get_attribute("class") or "").split()
    assert tab.errors == []


def test_hostile_log_runs_no_injected_script(
    open_report: Callable[[Path], Tab], hostile_html: Path, tmp_path: Path
) -> None:
    """Markup and script in every log field only ever show as text: no trap fires, no error."""
    tab = open_report(hostile_html)
    page = tab.page
    # The payloads set window.__pwned (from <img onerror> and <script>) or call alert().
    assert page.evaluate("typeof window.__pwned") == "undefined"
    injected = page.evaluate(
        """() => ({
          images: document.querySelectorAll('img').length,
          handlers: [...document.querySelectorAll('*')].flatMap(
            e => [...e.attributes].map(a => a.name).filter(n => n.startsWith('on'))),
          scripts: document.scripts.length,
        })"""
    )
    assert injected == {"images": 0, "handlers": [], "scripts": 4}
    cells = page.locator("#offenders-table code").all_inner_texts()
    assert any(cell.startswith("/srv/<script>alert(1)</script>.py") for cell in cells), cells
    labels = page.evaluate(_FRAMES_JS)["labels"]
    payload = HOSTILE[3]  # "</script><script>window.__pwned=1</script>", a sampled frame
    assert payload in labels
    tab.frame(payload).hover(timeout=WAIT_MS)
    tip = page.locator(".d3-flame-graph-tip")
    tip.wait_for(state="visible", timeout=WAIT_MS)
    assert payload in tip.inner_text(timeout=WAIT_MS)
    page.locator("#flame-search").fill("<img", timeout=WAIT_MS)
    page.wait_for_function(
        "() => document.querySelector('#flame-details').textContent.includes('frames match')"
    )
    keep_screenshot(tab, tmp_path, "report-hostile.png")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert tab.dialogs == []
    assert tab.errors == []


def test_without_javascript_the_tables_still_read(
    browser: Browser, demo_html: Path, demo_log: Path
) -> None:
    """With JavaScript off, the offenders table, sources and timeline show; the chart says why."""
    summary, _ = make_summary(demo_log)
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(demo_html.as_uri(), wait_until="load", timeout=WAIT_MS)
        rows = page.locator("#offenders-table tbody tr")
        assert rows.count() == len(summary.groups)
        assert rows.first.is_visible()
        assert page.locator("#sources figure pre").count() == len(summary.groups)
        assert page.locator("#timeline svg rect").count() > 0
        assert "needs JavaScript" in page.locator("#flame-section").inner_text()
        assert page.locator("#flame svg").count() == 0
        assert page.locator("#flame-controls").is_hidden()
    finally:
        context.close()
