"""The pytest plugin: fail the tests during which the event loop was blocked.

Registered through the ``pytest11`` entry point and inactive unless asked for:
``pytest --loophound`` or ``loophound = true`` in the ini file. One guard watches
every loop that runs in the test process (pytest-asyncio's, anyio's, ``asyncio.run``
in a sync test, asgiref's loops in threads). At the end of each phase (setup, call,
teardown) the plugin waits until everything detected so far was delivered and takes
the phase's incidents: a phase that passed and blocked the loop fails (an error when it
is a fixture's setup or teardown, as pytest counts those); a phase that already
failed keeps its own failure first and gets a ``loophound`` section.
"""

from __future__ import annotations

import dataclasses
import os
import sysconfig
import threading
import warnings
from collections.abc import Generator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import _pytest
import pluggy
import pytest

from loophound._config import DETECTORS, resolve_config, validate_allow
from loophound._events import Event
from loophound._guard import Guard, active_guard, install
from loophound.exceptions import BlockingCallWarning, ConfigurationError

__all__ = ["PluginSettings", "settings_from"]

MODES = ("fail", "warn", "off")
#: Incidents printed in full per failing phase; the rest are counted.
_SHOWN = 5
_TOP = 10
#: Every blocking call of every test counts: the guard's per-call-site cap is lifted.
_NO_RATE_CAP = 10_000_000


@dataclass(frozen=True)
class PluginSettings:
    """The plugin's effective settings (command line over ini)."""

    enabled: bool = False
    threshold: float = 0.1
    mode: str = "fail"
    allow: tuple[str, ...] = ()
    detectors: tuple[str, ...] = DETECTORS
    jsonl: str | None = None

    def header(self) -> str:
        """Return the line of the report header."""
        parts = [
            f"threshold={self.threshold}",
            f"mode={self.mode}",
            f"detectors={','.join(self.detectors)}",
        ]
        if self.allow:
            parts.append(f"allow={','.join(self.allow)}")
        if self.jsonl:
            parts.append(f"jsonl={self.jsonl}")
        return "loophound: " + " ".join(parts)


# -- options ---------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every option is a command-line flag and an ini key."""
    group = parser.getgroup("loophound", "fail tests that block the asyncio event loop")
    group.addoption(
        "--loophound",
        action="store_true",
        default=None,
        help="fail tests during which an event loop was blocked (ini: loophound = true)",
    )
    parser.addini("loophound", "turn the loophound plugin on", type="bool", default=False)
    for name, text in (
        ("threshold", "seconds: a loop step or stall longer than this is an incident"),
        ("mode", "fail (default), warn or off"),
        ("detectors", "comma-separated: " + ", ".join(DETECTORS)),
        ("jsonl", "append every incident to this JSON-lines file (for loophound report)"),
    ):
        group.addoption(f"--loophound-{name}", default=None, help=f"{text} (ini: loophound_{name})")
        parser.addini(f"loophound_{name}", text, default=None)
    group.addoption(
        "--loophound-allow",
        action="append",
        default=None,
        help="an allow rule such as operation:time.sleep or module:myapp.legacy; repeatable "
        "(ini: loophound_allow, one per line)",
    )
    parser.addini("loophound_allow", "allow rules, one per line", type="linelist", default=[])


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"--loophound-{name}")
    if value is None:
        value = config.getini(f"loophound_{name}")
    return value


def _ini_enabled(config: pytest.Config) -> bool:
    try:
        return bool(config.getini("loophound"))
    except (ValueError, pytest.UsageError) as error:  # pytest names no key, no choices
        raise pytest.UsageError(
            f"loophound: invalid value for the ini key loophound ({error}); "
            "valid values: true, false (or 1/0, yes/no, on/off)"
        ) from None


def settings_from(config: pytest.Config) -> PluginSettings:
    """Read and validate the options; a bad one raises ``pytest.UsageError``."""
    flag = config.getoption("--loophound")
    enabled = bool(flag) if flag is not None else _ini_enabled(config)
    mode = str(_option(config, "mode") or "fail").strip().lower()
    if mode not in MODES:
        raise pytest.UsageError(
            f"loophound: invalid value for --loophound-mode / loophound_mode: {mode!r}; "
            f"valid values: {', '.join(MODES)}"
        )
    values: dict[str, Any] = {}
    for name in ("threshold", "detectors", "jsonl"):
        value = _option(config, name)
        if value not in (None, ""):
            values[name] = value
    allow = _option(config, "allow") or []
    try:
        resolved = resolve_config(values, environ={})
        rules = validate_allow(list(allow), "--loophound-allow / loophound_allow")
    except ConfigurationError as exc:
        raise pytest.UsageError(f"{exc} (as --loophound-<key> or ini loophound_<key>)") from None
    if enabled and resolved.jsonl is not None:
        try:  # before the session starts: a log that cannot be opened is a usage error
            with open(resolved.jsonl, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise pytest.UsageError(
                f"loophound: invalid value for --loophound-jsonl / loophound_jsonl: "
                f"{resolved.jsonl!r}; it cannot be opened for append ({exc.strerror})"
            ) from None
    return PluginSettings(
        enabled=enabled,
        threshold=resolved.threshold,
        mode=mode,
        allow=rules,
        detectors=resolved.detectors,
        jsonl=resolved.jsonl,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; when asked for, the plugin that does the work."""
    config.addinivalue_line(
        "markers",
        "loophound(allow=[...], threshold=SECONDS, mode='fail'|'warn'|'off'): loophound "
        "settings for a test, a class or a module",
    )
    settings = settings_from(config)
    if settings.enabled:
        config.pluginmanager.register(LoophoundPlugin(config, settings), "loophound-session")


@pytest.fixture
def loophound_allow() -> type[Any]:
    """``loophound.allow_blocking``: ``with loophound_allow("reason"): ...`` in a test."""
    from loophound._context import allow_blocking  # noqa: PLC0415 - keep import light

    return allow_blocking


# -- the session -------------------------------------------------------------------------


class _PhaseSink:
    """Collects events on the dispatcher thread; the plugin takes them per phase."""

    name = "pytest"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def deliver(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def take(self) -> list[Event]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class _Site:
    """One call site across the run: how often it blocked and where first."""

    operation: str
    location: str
    count: int = 0
    longest: float = 0.0
    tests: list[str] = field(default_factory=list)

    def add(self, duration: float | None, nodeid: str) -> None:
        self.count += 1
        self.longest = max(self.longest, duration or 0.0)
        if len(self.tests) < 3 and nodeid not in self.tests:
            self.tests.append(nodeid)


@dataclass(frozen=True)
class _ItemSettings:
    threshold: float
    mode: str
    allow: tuple[str, ...]


class LoophoundPlugin:
    """Owns the guard of the test session and turns incidents into test outcomes."""

    def __init__(self, config: pytest.Config, settings: PluginSettings) -> None:
        self.config = config
        self.settings = settings
        self.sink = _PhaseSink()
        self.guard: Guard | None = None
        self._owned = False
        self._sites: dict[str, _Site] = {}
        #: Rules given for the session and by markers, and those that matched.
        self._rules: list[str] = list(settings.allow)
        self._used: set[str] = set()
        self._item: _ItemSettings | None = None
        self._controller = False
        self._invalid: dict[str, str] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        message = self._invalid.get(item.nodeid)
        if message is not None:
            pytest.fail(message, pytrace=False)

    # -- session -----------------------------------------------------------------------

    def pytest_report_header(self) -> str:
        return self.settings.header()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Under pytest-xdist the controller runs no test: its workers have guards.
        self._controller = session.config.pluginmanager.getplugin("dsession") is not None
        if self._controller:
            return
        self.guard = self._install(self.settings.threshold)

    def _install(self, threshold: float) -> Guard:
        current = active_guard()
        if current is not None:  # a guard of the project's own (conftest): join it
            self._owned = False
            current.add_sink(self.sink)
            return current
        self._owned = True
        guard = install(
            threshold=threshold,
            sinks=(),
            detectors=self.settings.detectors,
            allow=self.settings.allow,
            jsonl=self.settings.jsonl,
            rate_limit=_NO_RATE_CAP,
        )
        guard.add_sink(self.sink)
        return guard

    def _uninstall(self) -> None:
        guard, self.guard = self.guard, None
        if guard is None:
            return
        guard.flush()
        self._used.update(set(self.settings.allow) - set(guard.unused_allow_rules()))
        if self._owned:
            guard.uninstall()
        else:
            guard.remove_sink(self.sink)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._uninstall()
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: hand the summary to the controller
            workeroutput["loophound"] = {
                "sites": [
                    [key, s.operation, s.location, s.count, s.longest, s.tests]
                    for key, s in self._sites.items()
                ],
                "rules": self._rules,
                "used": sorted(self._used),
            }

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any) -> None:
        """On the xdist controller: merge a worker's call sites and allow rules."""
        data = getattr(node, "workeroutput", {}).get("loophound")
        if not isinstance(data, dict):
            return
        for key, operation, location, count, longest, tests in data.get("sites", []):
            site = self._sites.setdefault(key, _Site(operation, location))
            site.count += count
            site.longest = max(site.longest, longest)
            site.tests.extend(t for t in tests if t not in site.tests and len(site.tests) < 3)
        for rule in data.get("rules", []):
            if rule not in self._rules:
                self._rules.append(rule)
        self._used.update(data.get("used", []))

    # -- each test ---------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        if self.guard is None:
            return (yield)
        try:
            settings = self._settings_for(item)
        except pytest.UsageError as exc:
            if not hasattr(self.config, "workerinput"):
                raise
            # An xdist worker cannot stop the run: the test errors with the message.
            self._invalid[item.nodeid] = str(exc)
            try:
                return (yield)
            finally:
                self._invalid.pop(item.nodeid, None)
        with ExitStack() as stack:
            if settings.mode == "off":
                # The guard's strict mode reads the warning filters: off means off.
                stack.enter_context(warnings.catch_warnings())
                warnings.filterwarnings("ignore", category=BlockingCallWarning)
            if settings.threshold < self.settings.threshold and self._owned:
                # A stricter threshold than the session's: a guard of its own for it.
                stack.callback(self._swap_guard, self.settings.threshold)
                self._swap_guard(settings.threshold)
            guard = self.guard
            if settings.allow and guard is not None:
                combined = stack.enter_context(guard.extra_allow(settings.allow))
                stack.callback(lambda: self._used.update(combined.used))
            self._item = settings
            try:
                return (yield)
            finally:
                self._item = None

    def _swap_guard(self, threshold: float) -> None:
        self._uninstall()
        self.guard = self._install(threshold)

    def _settings_for(self, item: pytest.Item) -> _ItemSettings:
        marker = item.get_closest_marker("loophound")
        session = self.settings
        if marker is None:
            return _ItemSettings(session.threshold, session.mode, ())
        unknown = set(marker.kwargs) - {"allow", "threshold", "mode"}
        if marker.args or unknown:
            bad = [repr(arg) for arg in marker.args] + sorted(unknown)
            raise pytest.UsageError(
                f"loophound: invalid loophound marker on {item.nodeid}: unexpected argument(s) "
                f"{', '.join(bad)}; it takes only the keyword arguments allow, threshold and mode"
            )
        mode = str(marker.kwargs.get("mode", session.mode)).lower()
        if mode not in MODES:
            raise pytest.UsageError(
                f"loophound: invalid mode in the loophound marker on {item.nodeid}: {mode!r}; "
                f"valid values: {', '.join(MODES)}"
            )
        try:
            threshold = session.threshold
            if "threshold" in marker.kwargs:
                threshold = resolve_config(
                    {"threshold": marker.kwargs["threshold"]}, environ={}
                ).threshold
            allow = validate_allow(
                marker.kwargs.get("allow", ()), f"the loophound marker on {item.nodeid}"
            )
        except ConfigurationError as exc:
            raise pytest.UsageError(f"{exc} (in the loophound marker on {item.nodeid})") from None
        for rule in allow:
            if rule not in self._rules:
                self._rules.append(rule)
        return _ItemSettings(threshold, mode, allow)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        events = self._take()
        report = yield
        settings = self._item or _ItemSettings(self.settings.threshold, self.settings.mode, ())
        loud = [e for e in events if not e.quiet and _counts(e, settings.threshold)]
        if loud and settings.mode != "off":
            for event in loud:
                self._remember(event, item.nodeid)
            self._judge(report, loud, call.when, settings.mode)
        return report

    def _take(self) -> list[Event]:
        guard = self.guard
        if guard is None:
            return []
        guard.flush()
        return self.sink.take()

    def _remember(self, event: Event, nodeid: str) -> None:
        location = event.culprit.location() if event.culprit is not None else "?"
        site = self._sites.setdefault(event.fingerprint, _Site(event.operation, location))
        site.add(event.duration, nodeid)

    def _judge(self, report: pytest.TestReport, events: list[Event], when: str, mode: str) -> None:
        text = failure_text(events, when)
        if mode == "warn":
            try:
                for event in events:
                    _warn(event)
            except Warning:
                mode = "fail"  # the warning filters make BlockingCallWarning an error
            else:
                report.sections.append((f"loophound {when}", text))
                return
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append((f"loophound {when}", text))

    # -- the summary -------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self._sites:
            terminalreporter.write_sep("=", "loophound: blocking call sites")
            ranked = sorted(self._sites.values(), key=lambda s: (-s.count, -s.longest))
            for site in ranked[:_TOP]:
                terminalreporter.write_line(
                    f"{site.count:5d}x  {site.longest * 1000:8.1f} ms max  {site.operation}  "
                    f"{site.location}  ({', '.join(site.tests)})"
                )
            if len(ranked) > _TOP:
                terminalreporter.write_line(f"... and {len(ranked) - _TOP} more call sites")
        unused = [rule for rule in self._rules if rule not in self._used]
        if unused:
            terminalreporter.write_sep("=", "loophound: allow rules that never matched")
            for rule in unused:
                terminalreporter.write_line(f"  {rule}")


def _counts(event: Event, threshold: float) -> bool:
    """Named calls always count; stalls and slow steps only from the test's threshold."""
    if event.kind == "call" or event.duration is None:
        return True
    return event.duration >= threshold


def _warn(event: Event) -> None:
    culprit = event.culprit
    if culprit is None:
        warnings.warn(event.headline(), BlockingCallWarning, stacklevel=2)
        return
    warnings.warn_explicit(
        event.headline(),
        BlockingCallWarning,
        culprit.filename,
        culprit.lineno,
        module_globals=dict(event.module_globals) if event.module_globals else None,
    )


_PYTEST_DIRS = tuple(
    os.path.dirname(module.__file__ or "") + os.sep for module in (_pytest, pluggy)
)
_LOOPHOUND_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: Frames above the first frame of the project's own code are the runner's: the event
#: loop, pytest-asyncio, anyio. They are left out of the failure's stack.
_RUNNER_DIRS = tuple(
    {sysconfig.get_paths()[key] + os.sep for key in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def _trimmed(event: Event) -> Event:
    """Return the event without pytest's and loophound's own frames in its stack."""
    frames = event.frames
    start = 0
    for index, frame in enumerate(frames):
        if frame.filename.startswith(_PYTEST_DIRS):
            start = index + 1
    while start < len(frames) - 1 and frames[start].filename.startswith(
        (*_RUNNER_DIRS, _LOOPHOUND_DIR)
    ):
        start += 1
    kept = tuple(f for f in frames[start:] if not f.filename.startswith(_LOOPHOUND_DIR))
    return dataclasses.replace(event, frames=kept or frames)


def failure_text(events: list[Event], when: str) -> str:
    """Return the failure text: what blocked the loop during the phase, with stacks."""
    phase = {"setup": "setup", "call": "the test", "teardown": "teardown"}.get(when, when)
    count = len(events)
    times = "time" if count == 1 else "times"
    lines = [f"loophound: the event loop was blocked {count} {times} during {phase}"]
    for event in events[:_SHOWN]:
        lines.append("")
        lines.append(_trimmed(event).format())
    if count > _SHOWN:
        lines.append("")
        lines.append(f"... and {count - _SHOWN} more")
    return "\n".join(lines)
