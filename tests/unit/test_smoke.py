"""The public API's basic promises."""

from __future__ import annotations

import asyncio
import time

import loophound
from helpers import line_of, loud, run_captured


def test_sleep_on_the_loop_is_one_event_at_the_culprit_line() -> None:
    """time.sleep in a coroutine is reported once, at the line that called it, with its duration."""

    async def main() -> None:
        time.sleep(0.02)  # culprit-sleep

    events = loud(run_captured(main))
    assert [e.operation for e in events] == ["time.sleep"]
    event = events[0]
    assert event.culprit is not None
    assert event.culprit.filename == __file__
    assert event.culprit.lineno == line_of("# culprit-sleep", __file__)
    assert event.duration is not None
    assert event.duration >= 0.02
    assert event.detectors == ("patches",)
    assert event.kind == "call"


def test_offloaded_sleep_is_not_reported() -> None:
    """time.sleep run with asyncio.to_thread happens off the loop thread and is no incident."""

    async def main() -> None:
        await asyncio.to_thread(time.sleep, 0.01)

    assert loud(run_captured(main)) == []


def test_install_uninstall_install_again_works() -> None:
    """A guard can be installed, uninstalled and installed again in one process."""
    for _ in range(3):
        guard = loophound.install(sinks=())
        assert guard.installed
        guard.uninstall()
        assert not guard.installed
    assert time.sleep.__module__ == "time"
