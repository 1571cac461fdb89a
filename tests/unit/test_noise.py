"""Noise control: rate cap, allow scopes and rules, redaction, stack size and the culprit."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import loophound
import loophound._recorder as recorder_module
from helpers import http_server, line_of, loud, run_captured
from loophound.sinks.jsonl import event_record

HELPER_SOURCE = """
import time


def nap():
    time.sleep(0.001)  # helper-line
"""


def nap() -> None:
    """Block the calling thread briefly, always from the same line."""
    time.sleep(0.001)  # rate-line


def write_module(directory: Path, name: str) -> ModuleType:
    """Write the helper source as ``name`` in ``directory`` and import it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(HELPER_SOURCE, encoding="utf-8")
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[ModuleType]:
    """A module ``lh_helpermod`` in tmp_path whose ``nap()`` sleeps."""
    module = write_module(tmp_path / "helpers", "lh_helpermod")
    yield module
    sys.modules.pop("lh_helpermod", None)


@pytest.fixture
def vendored(tmp_path: Path) -> Iterator[ModuleType]:
    """A module ``lh_vendored`` under a site-packages directory: third-party by default."""
    module = write_module(tmp_path / "site-packages", "lh_vendored")
    yield module
    sys.modules.pop("lh_vendored", None)


def test_rate_cap_keeps_the_first_events_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rate_limit=3 keeps 3 of 10 events per window; the next window's event says 7 suppressed."""
    clock = [1_000_000_000]
    monkeypatch.setattr(recorder_module, "_perf_ns", lambda: clock[0])
    capped_in_window: list[int] = []

    async def main() -> None:
        guard = loophound.active_guard()
        assert guard is not None
        for _ in range(10):
            nap()
        capped_in_window.append(guard.stats.rate_capped)
        clock[0] += 61 * 10**9  # the 60 s window is over
        nap()

    with loophound.capture(sinks=(), rate_limit=3, rate_window=60, imports="ignore") as events:
        asyncio.run(main())
        assert events.guard is not None
        stats = events.guard.stats
    found = loud(events)
    assert capped_in_window == [7]
    assert stats.rate_capped == 7
    assert len(found) == 4
    assert [e.suppressed for e in found] == [0, 0, 0, 7]
    assert len({e.fingerprint for e in found}) == 1
    assert "7 more like it suppressed by the rate cap" in found[3].format()


def test_allow_blocking_decorates_sync_and_async_functions() -> None:
    """allow_blocking as a decorator allows calls in sync and async functions, nothing else."""

    @loophound.allow_blocking("sync helper that may sleep")
    def sync_nap() -> None:
        time.sleep(0.001)

    @loophound.allow_blocking("async helper that may sleep")
    async def async_nap() -> str:
        time.sleep(0.001)
        return "done"

    async def main() -> None:
        sync_nap()
        assert await async_nap() == "done"
        time.sleep(0.001)  # not-allowed

    assert inspect.iscoroutinefunction(async_nap)
    assert async_nap.__name__ == "async_nap"
    assert sync_nap.__name__ == "sync_nap"
    events = loud(run_captured(main))
    assert [e.culprit.lineno for e in events if e.culprit] == [line_of("# not-allowed", __file__)]


def test_allow_blocking_needs_a_reason() -> None:
    """allow_blocking without a real reason raises TypeError."""
    with pytest.raises(TypeError, match="reason"):
        loophound.allow_blocking("  ")


def test_allow_scope_follows_the_task() -> None:
    """A task created inside the scope is allowed; a sibling task running meanwhile is not."""

    async def main() -> None:
        gate = asyncio.Event()

        async def sibling() -> None:
            await gate.wait()
            time.sleep(0.001)  # sibling-line

        async def child() -> None:
            time.sleep(0.001)  # child-line

        other = asyncio.create_task(sibling())
        with loophound.allow_blocking("the child task is allowed"):
            own = asyncio.create_task(child())
            gate.set()
            await asyncio.wait_for(asyncio.gather(own, other), 10)
            time.sleep(0.001)  # scope-line
        time.sleep(0.001)  # after-line

    events = loud(run_captured(main))
    lines = [e.culprit.lineno for e in events if e.culprit]
    assert lines == [line_of("# sibling-line", __file__), line_of("# after-line", __file__)]


RULES: dict[str, Callable[[ModuleType], str]] = {
    "module": lambda m: f"module:{m.__name__}",
    "function": lambda m: f"function:{m.__name__}.nap",
    "path": lambda m: f"path:{Path(m.__file__ or '').parent}",
    "operation": lambda _: "operation:time.sleep",
}


@pytest.mark.parametrize("kind", sorted(RULES))
def test_allow_rule_suppresses_a_matching_call(helper: ModuleType, kind: str) -> None:
    """Each kind of allow rule suppresses the call it matches and only that call."""
    rule = RULES[kind](helper)

    async def main() -> None:
        helper.nap()
        select.select([], [], [], 0.001)  # unmatched-line

    with loophound.capture(sinks=(), allow=[rule], imports="ignore") as events:
        asyncio.run(main())
        guard = events.guard
        assert guard is not None
        assert guard.unused_allow_rules() == ()
        assert guard.stats.allowed >= 1
    found = loud(events)
    assert [(e.operation, e.culprit.lineno if e.culprit else 0) for e in found] == [
        ("select.select", line_of("# unmatched-line", __file__))
    ]


def test_unused_allow_rules_are_listed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A rule that never matched is returned by unused_allow_rules() and logged at uninstall."""
    caplog.set_level(logging.WARNING, logger="loophound")

    async def main() -> None:
        nap()

    guard = loophound.install(
        sinks=(), allow=["module:nothing.here", "operation:time.sleep"], imports="ignore"
    )
    try:
        assert guard.unused_allow_rules() == ("module:nothing.here", "operation:time.sleep")
        asyncio.run(main())
        assert guard.unused_allow_rules() == ("module:nothing.here",)
    finally:
        guard.uninstall()
    assert guard.unused_allow_rules() == ("module:nothing.here",)
    messages = [
        r.getMessage()
        for r in caplog.records
        if r.name == "loophound" and r.levelno == logging.WARNING
    ]
    assert len(messages) == 1
    assert "module:nothing.here" in messages[0]
    assert "operation:time.sleep" not in messages[0]


def test_urls_are_redacted() -> None:
    """A URL's user, password and query never reach the event detail or text."""
    secrets = ("secret", "token", "user:", "abc")

    with http_server() as port:

        async def main() -> bytes:
            url = f"http://user:secret@127.0.0.1:{port}/x?token=abc"
            # urllib does not strip user info from http URLs: the lookup fails.
            with contextlib.suppress(urllib.error.URLError):
                urllib.request.urlopen(url, timeout=5).close()
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/x?token=abc#frag", timeout=5
            ) as response:
                return bytes(response.read())

        with loophound.capture(sinks=(), imports="ignore") as events:
            assert asyncio.run(main()) == b"ok"

    requests = [e for e in events if e.operation == "urllib.request.urlopen"]
    assert [e.detail for e in requests] == [f"http://127.0.0.1:{port}/x"] * 2
    for event in events:
        # format() also quotes source lines, which are the test's own literals.
        text = f"{event.headline()} {json.dumps(event_record(event))}"
        for secret in secrets:
            assert secret not in text, (secret, event.operation)


def test_command_lines_are_redacted() -> None:
    """subprocess.run reports only the program name, never the arguments."""

    async def main() -> None:
        subprocess.run(["true", "--password=hunter2"], check=True, timeout=30)

    events = run_captured(main, imports="ignore")
    popen = [e for e in loud(events) if e.operation == "subprocess.run"]
    assert [e.detail for e in popen] == ["true"]
    for event in events:
        assert "hunter2" not in f"{event.headline()} {json.dumps(event_record(event))}"


def test_stack_sample_rate_zero_keeps_frames_up_to_the_culprit() -> None:
    """With stack_sample_rate=0 no frame outside the culprit is kept; with 1 the stack is kept."""

    async def main() -> None:
        time.sleep(0.001)  # sampled-sleep
        subprocess.run(["true"], check=True, timeout=30)  # sampled-run

    for rate in (0.0, 1.0):
        events = loud(run_captured(main, stack_sample_rate=rate, imports="ignore"))
        assert [e.operation for e in events] == ["time.sleep", "subprocess.run"]
        sleep, run = events
        assert sleep.culprit is not None
        assert run.culprit is not None
        assert run.culprit.lineno == line_of("# sampled-run", __file__)
        if rate == 0.0:
            assert sleep.frames == (sleep.culprit,)
            assert run.frames[0] == run.culprit  # the outermost frame kept is the culprit
            assert len(run.frames) > 1  # the frames between culprit and primitive stay
        else:
            assert len(sleep.frames) > 1
            assert sleep.frames[-1] == sleep.culprit
            assert run.frames[0] != run.culprit


def test_max_frames_bounds_the_stack() -> None:
    """No event carries more than max_frames frames, and the culprit is always kept."""

    def deep(depth: int) -> None:
        if depth:
            deep(depth - 1)
            return
        time.sleep(0.001)  # deep-sleep

    async def main() -> None:
        deep(20)
        subprocess.run(["true"], check=True, timeout=30)  # bounded-run

    events = loud(run_captured(main, max_frames=2, imports="ignore"))
    assert [e.operation for e in events] == ["time.sleep", "subprocess.run"]
    for event in events:
        assert len(event.frames) <= 2
        assert event.culprit is not None
        assert event.culprit in event.frames
    sleep, run = events
    assert sleep.culprit is not None
    assert sleep.culprit.lineno == line_of("# deep-sleep", __file__)
    assert [f.function for f in sleep.frames] == [sleep.frames[0].function] * 2  # deep, deep
    assert run.culprit is not None
    assert run.culprit.lineno == line_of("# bounded-run", __file__)


def test_exclude_modules_moves_the_culprit_to_the_caller(helper: ModuleType) -> None:
    """A module named in exclude_modules is not the user's: the culprit becomes its caller."""
    helper_file = helper.__file__

    async def main() -> None:
        helper.nap()  # caller-line

    plain = loud(run_captured(main, imports="ignore"))
    excluded = loud(run_captured(main, imports="ignore", exclude_modules=["lh_helpermod"]))
    assert [e.culprit for e in plain if e.culprit] == [plain[0].culprit]
    assert plain[0].culprit is not None
    assert plain[0].culprit.filename == helper_file
    assert excluded[0].culprit is not None
    assert excluded[0].culprit.filename == __file__
    assert excluded[0].culprit.lineno == line_of("# caller-line", __file__)
    assert plain[0].fingerprint != excluded[0].fingerprint


def test_code_roots_make_site_packages_code_the_culprit(
    vendored: ModuleType, tmp_path: Path
) -> None:
    """Code under site-packages is third-party unless code_roots names its directory."""

    async def main() -> None:
        vendored.nap()  # vendored-caller

    plain = loud(run_captured(main, imports="ignore"))
    rooted = loud(
        run_captured(main, imports="ignore", code_roots=[str(tmp_path / "site-packages")])
    )
    assert plain[0].culprit is not None
    assert plain[0].culprit.filename == __file__
    assert plain[0].culprit.lineno == line_of("# vendored-caller", __file__)
    assert rooted[0].culprit is not None
    assert rooted[0].culprit.filename == vendored.__file__
    assert rooted[0].culprit.function == "nap"


def test_include_modules_make_excluded_looking_code_the_users(vendored: ModuleType) -> None:
    """include_modules makes a site-packages module the user's code, as code_roots does."""

    async def main() -> None:
        vendored.nap()

    events = loud(run_captured(main, imports="ignore", include_modules=["lh_vendored"]))
    assert events[0].culprit is not None
    assert events[0].culprit.filename == vendored.__file__


def test_dns_lookups_never_carry_credentials() -> None:
    """A host name given with user:password@ reaches the sinks without the credentials."""

    async def main() -> None:
        try:
            socket.getaddrinfo("user:secret@127.0.0.1", 80)
        except OSError:
            pass

    events = loud(run_captured(main))
    assert [e.detail for e in events if e.operation == "socket.getaddrinfo"] == ["127.0.0.1"]
