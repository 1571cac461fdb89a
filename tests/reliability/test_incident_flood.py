"""A flood of incidents: ~10 000 per second for ~10 s, every call accounted for, memory flat.

The loop makes 100 000 patched ``time.sleep(1e-9)`` calls from four call sites, ten
per loop step (a 1 ns sleep is a ~75 µs system call on the 2-core CI machine, so
the run takes about 9 s: the rate is measured, not assumed). The cost of a capped
call is measured by bench/scale.py, never asserted here.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from typing import Any

import pytest

import loophound
from helpers import line_of
from loophound import Event

#: Upper bound of the flood's wall time; far above the ~9 s it takes.
FLOOD_BOUND = 60.0
CALLS_PER_STEP = 10
#: RSS may grow this much from 10 000 to 100 000 incidents (it grows by less than 0.1
#: MiB here). Keeping any object per incident would exceed it: a RawIncident with its
#: frame list is ~300 bytes, 90 000 of them ~26 MiB; the bound is about 47 bytes each.
RSS_GROWTH_BOUND = 4 * 2**20
#: GC-tracked objects may grow this much over the same 90 000 incidents: keeping one
#: container (a record, a list, a frame) per incident would add 90 000.
OBJECT_GROWTH_BOUND = 2_000
TINY = 1e-9


def site_a() -> None:
    """First call site."""
    time.sleep(TINY)  # site a


def site_b() -> None:
    """Second call site."""
    time.sleep(TINY)  # site b


def site_c() -> None:
    """Third call site."""
    time.sleep(TINY)  # site c


def site_d() -> None:
    """Fourth call site."""
    time.sleep(TINY)  # site d


SITES = (site_a, site_b, site_c, site_d)
SITE_LINES = {line_of(f"# site {name}", __file__): name for name in "abcd"}


class CountingSink:
    """Counts what reaches a sink: events per call site, and their suppressed calls."""

    name = "counting"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.events: dict[str, int] = dict.fromkeys("abcd", 0)
        self.other: list[Event] = []
        #: Calls the rate cap suppressed, carried by the next admitted event of the site.
        self.carried = 0
        #: Calls the rate cap suppressed that no admitted event carried (at flush).
        self.drained = 0

    def deliver(self, event: Event) -> None:
        """Count an event of a site (anything else is kept, to be shown on failure)."""
        site = SITE_LINES.get(event.culprit.lineno) if event.culprit is not None else None
        if site is None or event.operation != "time.sleep":
            self.other.append(event)
            return
        self.events[site] += 1
        self.carried += event.suppressed
        if self.delay:
            threading.Event().wait(self.delay)

    def deliver_suppressed(self, _fingerprint: str, count: int) -> None:
        """Count calls the rate cap suppressed, handed over at flush."""
        self.drained += count

    def close(self) -> None:
        """Nothing to release."""

    def delivered(self) -> int:
        """Return how many events of the sites arrived."""
        return sum(self.events.values())


def memory_use() -> tuple[int, int]:
    """Return this process's RSS in bytes and its count of GC-tracked objects, after a gc."""
    # The test's own blocking work, on the loop thread: not an incident.
    with loophound.allow_blocking("the test measures its own memory use"):
        gc.collect()
        objects = len(gc.get_objects())
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE"), objects


async def flood(steps: int, checkpoints: dict[int, tuple[int, int]]) -> int:
    """Make ``steps`` loop steps of CALLS_PER_STEP blocking calls; return the calls made."""
    deadline = time.monotonic() + FLOOD_BOUND
    calls = 0
    for _ in range(steps):
        if time.monotonic() > deadline:
            break
        for index in range(CALLS_PER_STEP):
            SITES[index % len(SITES)]()
        calls += CALLS_PER_STEP
        if calls in checkpoints:
            checkpoints[calls] = memory_use()
        await asyncio.sleep(0)
    return calls


def test_a_flood_of_capped_incidents_is_fully_accounted_with_flat_memory(
    record_property: Any,
) -> None:
    """100 000 incidents at ~10 000/s: every step completes, every call counted, memory flat."""
    steps = 10_000
    checkpoints: dict[int, tuple[int, int]] = dict.fromkeys((10_000, 50_000, 100_000), (0, 0))
    sink = CountingSink()
    # A one-second window: each site admits 60 incidents per second, the rest are capped
    # and carried by the next admitted event or drained at flush.
    guard = loophound.install(sinks=(), rate_window=1.0, imports="ignore")
    try:
        guard.add_sink(sink)
        began = time.perf_counter()
        calls = asyncio.run(flood(steps, checkpoints))
        took = time.perf_counter() - began
        assert guard.flush(30.0)
        stats = guard.stats.as_dict()
    finally:
        guard.uninstall()
    rate = calls / took
    record_property("incidents_per_second", round(rate))
    record_property("seconds", round(took, 2))

    assert calls == steps * CALLS_PER_STEP, f"only {calls} calls in {took:.1f} s"
    assert stats["incidents"] == calls
    assert stats["allowed"] >= len(checkpoints)  # the test's own reads of its memory use
    assert stats["dropped"] == 0
    # Every call is an event that arrived, or a call the cap suppressed and counted. (A
    # stall may come too, on a machine so busy that the loop thread lost the CPU.)
    assert [e for e in sink.other if e.kind == "call"] == []
    assert sink.delivered() + sink.carried + sink.drained == calls
    assert sink.carried + sink.drained == stats["rate_capped"]
    # At most rate_limit events per site per one-second window.
    windows = int(took) + 2
    assert all(0 < count <= 60 * windows for count in sink.events.values()), sink.events
    (rss_10k, objects_10k), _, (rss_100k, objects_100k) = (
        checkpoints[n] for n in sorted(checkpoints)
    )
    assert rss_100k - rss_10k < RSS_GROWTH_BOUND
    assert objects_100k - objects_10k < OBJECT_GROWTH_BOUND


def test_an_overflowing_queue_drops_and_counts_every_record() -> None:
    """With no rate cap and a slow sink, the queue overflows: delivered + dropped == calls."""
    steps = 1_000
    sink = CountingSink(delay=0.001)  # ~1 000 events per second, a tenth of the flood
    # Only the patch detector: one queue record per incident (no step or stall records),
    # so that the counts add up exactly.
    guard = loophound.install(
        sinks=(), detectors=("patches",), rate_limit=10_000_000, queue_size=500
    )
    try:
        guard.add_sink(sink)
        calls = asyncio.run(flood(steps, {}))
        assert guard.flush(30.0)
        stats = guard.stats.as_dict()
    finally:
        guard.uninstall()
    assert calls == steps * CALLS_PER_STEP
    assert stats["incidents"] == calls
    assert stats["rate_capped"] == 0
    assert stats["dropped"] > 0
    assert [e for e in sink.other if e.kind == "call"] == []
    assert sink.delivered() + stats["dropped"] == calls
    assert stats["dispatched"] == sink.delivered()


@pytest.fixture(autouse=True)
def _no_loophound_threads_left() -> Any:
    """Each test ends with no loophound thread alive."""
    yield
    deadline = time.monotonic() + 5
    while any(t.name.startswith("loophound") for t in threading.enumerate()):
        assert time.monotonic() < deadline, threading.enumerate()
        time.sleep(0.01)


def block_once() -> None:
    """One short blocking call, always from this line."""
    time.sleep(0.001)  # overflow line


def test_calls_queued_before_an_overflow_are_delivered_promptly_after_it() -> None:
    """After a stuck sink frees up, every queued call arrives within 3 s, without a flush."""
    release, entered = threading.Event(), threading.Event()
    arrived: list[Event] = []

    def on_event(event: Event) -> None:
        arrived.append(event)
        if len(arrived) == 1:
            entered.set()
            release.wait(FLOOD_BOUND)

    async def main() -> None:
        block_once()
        assert await asyncio.to_thread(entered.wait, FLOOD_BOUND)
        for _ in range(10):  # two records each (the call, its step's end); the queue takes 5
            block_once()
            await asyncio.sleep(0)

    guard = loophound.install(sinks=(), on_event=on_event, queue_size=5, imports="ignore")
    try:
        asyncio.run(main())
        dropped = guard.stats.dropped
        release.set()
        # The queue held three calls (and two of their steps' ends): all three are due.
        deadline = time.monotonic() + 3
        while len(arrived) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        promptly = len(arrived)
    finally:
        release.set()
        guard.uninstall()
    assert dropped == 15
    assert promptly == 4
