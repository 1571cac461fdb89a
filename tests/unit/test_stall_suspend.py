"""A process that is stopped and continued is not a stalled loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from loophound import _merge
from loophound._merge import Merger
from loophound.detectors.callbacks import StepRecord

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import loophound

    def emit(event):
        print(json.dumps({"kind": event.kind, "operation": event.operation}), flush=True)

    async def main(mode):
        print("ready", flush=True)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            if mode == "cooperative":
                t = time.perf_counter() + 0.005
                while time.perf_counter() < t:
                    pass
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.05)

    guard = loophound.install(sinks=(), on_event=emit, threshold=0.1)
    asyncio.run(main(sys.argv[1]))
    guard.uninstall()
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("mode", ["idle", "cooperative"])
def test_sigstop_and_sigcont_report_nothing(mode: str) -> None:
    """Stopping the whole process for 500 ms, idle or busy in short steps, reports no stall."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.5)
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert out.strip().splitlines() == ["done"]


def _held_slow_step(verdicts: list[bool | None]) -> tuple[Merger, list[object]]:
    """A merger holding one slow step, asking ``verdicts`` in turn whether it was suspended."""
    answers = iter(verdicts)

    def suspended_since(_thread: int, _since: int, _until: int | None) -> bool | None:
        return next(answers, verdicts[-1])

    slow_event = object()
    merger = Merger(
        build=lambda _raw: None,  # type: ignore[arg-type,return-value]
        build_stall=lambda _stall: None,
        build_step=lambda _step: slow_event,  # type: ignore[arg-type,return-value]
        hold_ns=0,
        wait_for_stalls=True,
        stalled_threads=frozenset,
        suspended_since=suspended_since,
    )
    thread, started = threading.get_ident(), time.time_ns()
    step = StepRecord(thread, 1, started, 500_000_000, slow=True, callback=None, context=None)
    assert merger.add(step) == []
    return merger, [slow_event]


def test_a_slow_step_waits_until_the_watchdog_has_looked_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow step is not delivered while the watchdog has not looked since it ended."""
    monkeypatch.setattr(_merge, "_RECHECK_NS", 0)
    merger, _ = _held_slow_step([None, None, True])
    assert merger.due() == []  # not known yet: held
    assert merger.due() == []  # still not known
    assert merger.due() == []  # suspended after all: nothing to deliver
    assert merger.next_deadline() is None  # and nothing is held any more


def test_a_slow_step_is_delivered_once_the_watchdog_saw_no_suspension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the watchdog has looked and saw no suspension, the slow step is delivered."""
    monkeypatch.setattr(_merge, "_RECHECK_NS", 0)
    merger, (slow_event,) = _held_slow_step([None, False])
    assert merger.due() == []
    assert merger.due() == [slow_event]


def test_a_slow_step_is_delivered_when_the_watchdog_never_looks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watchdog that never looks again holds a slow step for a bounded time only."""
    monkeypatch.setattr(_merge, "_UNKNOWN_HOLD_NS", 0)
    merger, (slow_event,) = _held_slow_step([None])
    assert merger.due() == [slow_event]
