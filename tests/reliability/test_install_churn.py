"""Install and uninstall 1 000 times under running loops; 50 loops in 50 threads at once.

Every incident names the thread that made it and that thread's own line; afterwards
nothing is left: no loophound thread, no watched loop, no guard, loop or frame kept
alive by loophound.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import itertools
import sys
import threading
import time
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loophound
from helpers import line_of, primitives_now
from loophound import Event

ORIGINALS = primitives_now()
#: Upper bound of every thread's life and of every wait in this file.
BOUND = 60.0
THREADS = 50
CALLS_PER_THREAD = 5


class Marker:
    """An object only a running coroutine's frame refers to: alive while the frame is."""


def loophound_threads() -> list[threading.Thread]:
    """Return loophound's live threads (dispatcher, watchdog)."""
    return [t for t in threading.enumerate() if t.name.startswith("loophound")]


def objects_of(kind: type) -> int:
    """Return how many GC-tracked objects of exactly ``kind`` exist."""
    return sum(type(o) is kind for o in gc.get_objects())


def live_loops(
    loops: dict[int, weakref.ref[asyncio.AbstractEventLoop]], bound: float = 5.0
) -> list[int]:
    """Return the keys of the loops still alive once gc ran (``bound`` s for them to go)."""
    deadline = time.monotonic() + bound
    while True:
        gc.collect()
        alive = [key for key, ref in loops.items() if ref() is not None]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def assert_nothing_left() -> None:
    """No guard, no loophound thread (5 s to wind down), every primitive restored."""
    assert loophound.active_guard() is None
    deadline = time.monotonic() + 5
    while loophound_threads():
        assert time.monotonic() < deadline, loophound_threads()
        time.sleep(0.01)
    assert primitives_now() == ORIGINALS


@pytest.fixture(autouse=True)
def _nothing_left() -> Iterator[None]:
    yield
    assert_nothing_left()


# -- 1 000 rounds under running loops ---------------------------------------------------


def tick_block() -> None:
    """The ticking loop's blocking call, always from this line."""
    time.sleep(0.0001)  # ticker line


def restart_block() -> None:
    """The restarting loops' blocking call, always from this line."""
    time.sleep(0.0001)  # restarter line


TICK_LINE = line_of("# ticker line", __file__)
RESTART_LINE = line_of("# restarter line", __file__)


async def tick(stop: threading.Event, ticks: list[int], loops: list[Any]) -> None:
    """Tick every millisecond until ``stop`` (BOUND seconds at most), blocking a little."""
    loops.append(weakref.ref(asyncio.get_running_loop()))
    deadline = time.monotonic() + BOUND
    while not stop.is_set() and time.monotonic() < deadline:
        ticks[0] += 1
        tick_block()
        await asyncio.sleep(0.001)


async def short_loop(marker: Marker) -> None:
    """One short-lived loop: block once, yield once."""
    restart_block()
    await asyncio.sleep(0)
    assert isinstance(marker, Marker)


def restart(stop: threading.Event, runs: list[int], loops: list[Any]) -> None:
    """Run short-lived loops one after another until ``stop`` (BOUND seconds at most)."""
    deadline = time.monotonic() + BOUND
    while not stop.is_set() and time.monotonic() < deadline:
        loop = asyncio.new_event_loop()
        loops.append(weakref.ref(loop))
        try:
            loop.run_until_complete(short_loop(Marker()))
        finally:
            loop.close()
        runs[0] += 1
        del loop
        stop.wait(0.005)  # a pause between loops, off any loop


def live_ticks(loop: asyncio.AbstractEventLoop) -> list[Any]:
    """Return the watchdog's live timer handles on ``loop`` (read from another thread)."""
    return [
        handle
        for handle in list(loop._scheduled)  # type: ignore[attr-defined]
        if "Watchdog" in getattr(handle._callback, "__qualname__", "") and not handle.cancelled()
    ]


def test_a_thousand_install_rounds_under_running_loops_leave_nothing() -> None:
    """1 000 install/uninstall rounds while loops tick and restart: all attributed, no leak."""
    events: list[Event] = []
    stop = threading.Event()
    ticks, runs = [0], [0]
    loops: list[Any] = []
    ticker = threading.Thread(
        target=lambda: asyncio.run(tick(stop, ticks, loops)), name="ticker", daemon=True
    )
    restarter = threading.Thread(
        target=restart, args=(stop, runs, loops), name="restarter", daemon=True
    )
    ticker.start()
    deadline = time.monotonic() + BOUND
    while not loops:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    ticking_loop = loops[0]()
    assert ticking_loop is not None
    restarter.start()
    guards: list[weakref.ref[loophound.Guard]] = []
    progress: list[tuple[int, int]] = []
    rounds = 0
    try:
        for rounds in range(1, 1001):
            guard = loophound.install(sinks=(), on_event=events.append, imports="ignore")
            if rounds % 2:
                # Already running when the guard came: only watched when asked to.
                guard.watch_loop(ticking_loop)
            guard.uninstall()
            assert guard.watched_loops() == []
            assert time.sleep is ORIGINALS["time.sleep"]
            guards.append(weakref.ref(guard))
            del guard
            if rounds % 100 == 0:
                progress.append((ticks[0], runs[0]))
            if time.monotonic() > deadline:
                break
        # No watchdog tick reschedules itself on the still-running loop.
        time.sleep(0.3)
        leftover = live_ticks(ticking_loop)
    finally:
        stop.set()
        ticker.join(BOUND)
        restarter.join(BOUND)
    assert not ticker.is_alive()
    assert not restarter.is_alive()
    assert rounds == 1000
    assert leftover == []
    # Both threads made progress through every block of 100 rounds.
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(progress))
    # Every incident came from one of the two loop threads, at that thread's own line.
    idents = {"ticker": ticker.ident, "restarter": restarter.ident}
    lines = {"ticker": TICK_LINE, "restarter": RESTART_LINE}
    assert events, "no incident at all in 1 000 rounds"
    for event in events:
        assert event.thread_id == idents[event.thread_name], event.format()
        if event.kind == "call":
            assert event.culprit is not None
            assert event.culprit.lineno == lines[event.thread_name], event.format()
    assert {e.thread_name for e in events if e.kind == "call"} == {"ticker", "restarter"}
    del ticking_loop, events
    gc.collect()
    assert [ref for ref in guards if ref() is not None] == []
    assert [ref for ref in loops if ref() is not None] == []


# -- 50 loops in 50 threads --------------------------------------------------------------


@pytest.fixture
def blockers(tmp_path: Path) -> Iterator[types.ModuleType]:
    """A module of THREADS functions, each blocking at a line of its own."""
    source = ["import time", ""]
    for index in range(THREADS):
        source += ["", f"def blocker_{index}(marker):", f"    time.sleep(0.001)  # line {index}"]
    path = tmp_path / "churn_blockers.py"
    path.write_text("\n".join(source) + "\n", encoding="utf-8")
    spec = importlib.util.spec_from_file_location("churn_blockers", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["churn_blockers"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["churn_blockers"]


def test_fifty_threads_each_get_their_own_incidents_and_nothing_is_kept(
    blockers: types.ModuleType,
) -> None:
    """50 threads with a loop each: every incident names its thread and its line; no leak."""
    lines = {index: line_of(f"# line {index}", blockers.__file__) for index in range(THREADS)}
    start = threading.Barrier(THREADS, timeout=BOUND)
    end = threading.Barrier(THREADS, timeout=BOUND)
    markers: dict[int, weakref.ref[Marker]] = {}
    loops: dict[int, weakref.ref[asyncio.AbstractEventLoop]] = {}
    errors: list[BaseException] = []

    async def main(index: int) -> None:
        marker = Marker()  # held by this frame only
        markers[index] = weakref.ref(marker)
        loops[index] = weakref.ref(asyncio.get_running_loop())
        blocker = getattr(blockers, f"blocker_{index}")
        for _ in range(CALLS_PER_THREAD):
            blocker(marker)
            await asyncio.sleep(0)

    def run(index: int) -> None:
        try:
            start.wait()  # all 50 threads alive together: their idents are distinct
            asyncio.run(main(index))
            end.wait()  # and stay alive until every loop has finished
        except BaseException as exc:  # shown by the assertion below
            errors.append(exc)

    gc.collect()
    loops_before = objects_of(asyncio.unix_events._UnixSelectorEventLoop)  # type: ignore[attr-defined]
    frames_before = objects_of(types.FrameType)
    threads = [
        threading.Thread(target=run, args=(index,), name=f"hound-{index}", daemon=True)
        for index in range(THREADS)
    ]
    with loophound.capture(sinks=(), imports="ignore") as events:
        guard = events.guard
        assert guard is not None
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BOUND)
        assert not any(thread.is_alive() for thread in threads)
        # Still installed: the loops ended and the guard forgot them.
        watched_while_installed = guard.watched_loops()
    assert errors == []
    idents = {thread.name: thread.ident for thread in threads}
    counts = dict.fromkeys(range(THREADS), 0)
    for event in events:
        assert event.thread_id == idents[event.thread_name], event.format()
        index = int(event.thread_name.removeprefix("hound-"))
        culprit = event.culprit
        if culprit is not None and culprit.filename == blockers.__file__:
            assert culprit.function == f"blocker_{index}", event.format()
            assert culprit.lineno == lines[index], event.format()
            if event.kind == "call":  # (a stall on a machine too busy may come too)
                assert event.operation == "time.sleep"
                counts[index] += 1
    assert counts == dict.fromkeys(range(THREADS), CALLS_PER_THREAD)
    assert watched_while_installed == []
    assert guard.watched_loops() == []
    del events, guard, threads
    assert live_loops(loops) == []
    assert [i for i, ref in markers.items() if ref() is not None] == []
    assert objects_of(asyncio.unix_events._UnixSelectorEventLoop) <= loops_before  # type: ignore[attr-defined]
    assert objects_of(types.FrameType) <= frames_before


def test_an_ended_loop_is_not_kept_alive_while_the_guard_is_installed() -> None:
    """A loop that ran in a thread and was closed is freed while the guard stays installed."""
    refs: dict[int, weakref.ref[asyncio.AbstractEventLoop]] = {}

    async def main() -> None:
        refs[0] = weakref.ref(asyncio.get_running_loop())
        for _ in range(30):  # 0.3 s: the watchdog looks at the loop several times
            await asyncio.sleep(0.01)

    with loophound.guard(sinks=()) as guard:
        thread = threading.Thread(target=asyncio.run, args=(main(),), name="short-lived")
        thread.start()
        thread.join(BOUND)
        assert not thread.is_alive()
        assert guard.watched_loops() == []
        # Twice the watchdog thread's longest sleep (0.5 s plus the threshold).
        alive = live_loops(refs, bound=1.2)
    assert alive == []


# -- the line that held the loop ---------------------------------------------------------


def spin(seconds: float) -> None:
    """Burn CPU for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_stall_after_a_short_call_in_the_same_step_names_the_stalling_line() -> None:
    """10 ms of sleep then 300 ms of CPU in one step: the 300 ms are blamed on the CPU work."""

    async def main() -> None:
        time.sleep(0.01)  # short call
        spin(0.3)  # the stall

    with loophound.capture(sinks=()) as events:
        asyncio.run(main())
    long_ones = [e for e in events if (e.duration or 0) >= 0.2]
    # Not ("time.sleep", "main"): the sleep's line blamed for 310 ms.
    assert [(e.operation, e.culprit.function if e.culprit else None) for e in long_ones] == [
        ("cpu", "spin")
    ]
    # The short call is an incident of its own, with its own duration.
    sleeps = [e for e in events if e.operation == "time.sleep"]
    assert len(sleeps) == 1
    assert sleeps[0].duration is not None
    assert sleeps[0] not in long_ones  # not merged with the stall
