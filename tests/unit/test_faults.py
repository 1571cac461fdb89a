"""Faults: raising, slow and hanging sinks never hurt the host; install/uninstall is clean."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import threading
import time

import pytest

import loophound
from helpers import loud, primitives_now
from loophound import ConfigurationError, Event

ORIGINALS: dict[str, object] = {
    "time.sleep": time.sleep,
    "socket.socket.recv": socket.socket.recv,
    "threading.Event.wait": threading.Event.wait,
    "select.select": select.select,
    "os.read": os.read,
}
WAIT = 10.0  # upper bound of every wait in this file; never reached when all is well


def current_primitives() -> dict[str, object]:
    """Return the objects the names of ``ORIGINALS`` point at right now."""
    return primitives_now()


def nap() -> None:
    """Block the calling thread briefly, always from the same line."""
    time.sleep(0.001)


class RaisingSink:
    """A sink whose every delivery raises."""

    name = "raising"

    def __init__(self) -> None:
        self.calls = 0

    def deliver(self, event: Event) -> None:
        """Count the call, then fail."""
        assert isinstance(event, Event)
        self.calls += 1
        raise RuntimeError("sink bug")

    def close(self) -> None:
        """Nothing to release."""


def sink_errors(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    """Return the ERROR records of the loophound logger that name the sink ``name``."""
    return [
        r
        for r in caplog.records
        if r.name == "loophound" and r.levelno == logging.ERROR and repr(name) in r.getMessage()
    ]


def test_raising_on_event_is_disabled_with_one_log_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising on_event leaves the coroutine running, logs one ERROR, and capture gets all."""
    caplog.set_level(logging.ERROR, logger="loophound")
    calls: list[Event] = []

    def on_event(event: Event) -> None:
        calls.append(event)
        raise ValueError("callback bug")

    async def main() -> str:
        for _ in range(4):
            nap()
        time.sleep(0.001)
        return "finished"

    guard = loophound.install(sinks=(), on_event=on_event, imports="ignore")
    try:
        with loophound.capture() as events:
            assert asyncio.run(main()) == "finished"
        with loophound.capture() as more:
            assert asyncio.run(main()) == "finished"
    finally:
        guard.uninstall()
    assert len(loud(events)) == 5
    assert len(loud(more)) == 5
    assert len(calls) == 1  # disabled after its first failure
    assert len(sink_errors(caplog, "callback")) == 1
    assert guard.stats.sink_failures == 1


def test_raising_added_sink_is_disabled_and_the_others_keep_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sink added with add_sink that raises is dropped after one ERROR; capture still fills."""
    caplog.set_level(logging.ERROR, logger="loophound")
    bad = RaisingSink()

    async def main() -> None:
        for _ in range(3):
            nap()

    with loophound.capture(sinks=(), imports="ignore") as events:
        assert events.guard is not None
        events.guard.add_sink(bad)
        asyncio.run(main())
        asyncio.run(main())
    assert len(loud(events)) == 6
    assert bad.calls == 1
    assert len(sink_errors(caplog, "raising")) == 1


def test_slow_on_event_never_delays_the_loop() -> None:
    """A callback that sleeps 0.2 s per event only delays loophound's own thread."""
    loop_done = threading.Event()
    loop_done_when_called: list[bool] = []

    def on_event(event: Event) -> None:
        # Holds the dispatcher until the loop has finished: if the loop waited for
        # the callback, this wait would time out and record False.
        loop_done_when_called.append(loop_done.wait(WAIT))
        time.sleep(0.2)

    async def main() -> int:
        total = 0
        for _ in range(3):
            nap()
            total += 1
        return total

    with loophound.guard(sinks=(), on_event=on_event, imports="ignore") as guard:
        assert asyncio.run(main()) == 3  # every call on the loop thread completed
        loop_done.set()
        assert guard.flush(WAIT)
    assert loop_done_when_called == [True, True, True]


def test_full_queue_drops_and_counts() -> None:
    """With queue_size=2 and a hanging callback, the excess is dropped and counted, not waited."""
    entered = threading.Event()
    release = threading.Event()
    delivered: list[Event] = []

    def on_event(event: Event) -> None:
        delivered.append(event)
        entered.set()
        release.wait(WAIT)

    async def main() -> int:
        time.sleep(0.001)  # taken by the dispatcher, whose callback then hangs
        assert await asyncio.to_thread(entered.wait, WAIT)
        for _ in range(10):
            nap()  # two fit in the queue, eight are dropped
        return guard.stats.dropped

    guard = loophound.install(
        sinks=(), on_event=on_event, imports="ignore", queue_size=2, detectors=("patches",)
    )
    try:
        dropped = asyncio.run(main())
    finally:
        release.set()
        guard.uninstall()
    assert dropped == 8
    assert guard.stats.dropped == 8
    assert len(delivered) == 3


def test_install_uninstall_fifty_times_restores_everything() -> None:
    """Fifty install/uninstall rounds leave every patched primitive the original object."""
    for _ in range(50):
        guard = loophound.install(sinks=())
        assert guard.installed
        assert loophound.active_guard() is guard
        assert time.sleep is not ORIGINALS["time.sleep"]
        assert socket.socket.recv is not ORIGINALS["socket.socket.recv"]
        guard.uninstall()
        assert loophound.active_guard() is None
    assert current_primitives() == ORIGINALS
    for name, original in ORIGINALS.items():
        assert current_primitives()[name] is original, name
    assert "recv" not in vars(socket.socket)
    assert [t for t in threading.enumerate() if t.name == "loophound-dispatcher"] == []


def test_install_still_works_after_fifty_rounds() -> None:
    """After many rounds a fresh guard still reports a blocking call."""
    for _ in range(50):
        loophound.install(sinks=()).uninstall()

    async def main() -> None:
        nap()

    with loophound.capture(sinks=(), imports="ignore") as events:
        asyncio.run(main())
    assert [e.operation for e in loud(events)] == ["time.sleep"]


def test_installing_twice_is_a_configuration_error() -> None:
    """A second install() raises ConfigurationError and leaves the first guard working."""
    first = loophound.install(sinks=())
    try:
        with pytest.raises(ConfigurationError, match="already installed"):
            loophound.install(sinks=())
        assert loophound.active_guard() is first
        assert first.installed
        with pytest.raises(ConfigurationError, match="already installed"), loophound.guard():
            pass  # pragma: no cover - never entered
        assert loophound.active_guard() is first
    finally:
        first.uninstall()
    assert time.sleep is ORIGINALS["time.sleep"]


def test_capture_with_settings_on_an_installed_guard_is_an_error() -> None:
    """capture(**settings) while a guard is installed raises naming the settings."""
    first = loophound.install(sinks=())
    try:
        with pytest.raises(ConfigurationError, match="max_frames"), loophound.capture(max_frames=3):
            pass  # pragma: no cover - never entered
        assert loophound.active_guard() is first
        with loophound.capture() as events:  # without settings it attaches
            assert events.guard is first
        assert first.installed
    finally:
        first.uninstall()


def test_uninstall_is_idempotent() -> None:
    """Calling uninstall() twice is harmless and a new install then works."""
    guard = loophound.install(sinks=())
    guard.uninstall()
    guard.uninstall()
    assert loophound.active_guard() is None
    again = loophound.install(sinks=())
    try:
        guard.uninstall()  # the old guard's uninstall must not touch the new one
        assert loophound.active_guard() is again
        assert again.installed
    finally:
        again.uninstall()
