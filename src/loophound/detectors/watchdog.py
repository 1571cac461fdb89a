"""The watchdog: a heartbeat on each watched loop and one thread that samples stalls.

One daemon thread serves every watched loop. Each tick it sends a beat to every loop
that has none pending (``call_soon_threadsafe``: works on asyncio, uvloop and loops in
any thread). A beat that is later than the threshold means the loop thread is stuck:
the thread then samples that thread's stack every few milliseconds until the beat
runs, and hands one stall record (start, duration, the sampled stacks, the loop
thread's CPU time) to the dispatcher. The lateness of every beat is the loop-delay
distribution.

Code that holds the GIL in C (a backtracking regex, ``json.loads``) starves this
thread. It wakes the moment the GIL is released, which is when the C call returns to
the frame that made it: the sample taken then shows the culprit line. The thread
tells such a stall (its own sleep overran and the loop thread burnt CPU) from a
suspended process (its own sleep overran, the loop thread burnt none).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType
from typing import Any

from loophound._frames import FrameKinds, walk_to_culprit

__all__ = ["LoopDelays", "StallRecord", "Watchdog"]

logger = logging.getLogger("loophound")
_perf_ns = time.perf_counter_ns
_MAX_SAMPLES = 2_000
_SCAN_LIMIT = 256


def _cpu_clock(thread_id: int) -> int | None:
    try:
        return time.pthread_getcpuclockid(thread_id)
    except (AttributeError, OSError, OverflowError):  # not on this platform
        return None


def _cpu_ns(clock: int | None) -> int | None:
    if clock is None:
        return None
    try:
        return time.clock_gettime_ns(clock)
    except OSError:  # the thread is gone
        return None


class Sample:
    """One look at the loop thread's stack: raw frames, innermost first."""

    __slots__ = ("codes", "culprit")

    def __init__(self, codes: list[tuple[CodeType, int]], culprit: int) -> None:
        self.codes = codes
        self.culprit = culprit


class StallRecord:
    """A stall as the watchdog saw it; the dispatcher turns it into an Event."""

    __slots__ = (
        "context",
        "cpu",
        "duration_ns",
        "loop_id",
        "samples",
        "started_ns",
        "task",
        "thread_id",
        "thread_name",
    )

    def __init__(self, state: _LoopState, duration_ns: int, cpu: float | None) -> None:
        self.thread_id = state.thread_id
        self.thread_name = state.thread_name
        self.loop_id = id(state.loop)
        self.started_ns = state.stall_started
        self.duration_ns = duration_ns
        self.samples = state.samples
        self.cpu = cpu
        self.task = state.stall_task
        self.context = state.stall_context


class LoopDelays:
    """Counts of heartbeat lateness in fixed buckets (seconds), for every beat.

    Written by the loop thread (one increment per beat), read by exporters.
    """

    BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0.0
        self.maximum = 0.0
        self.observers: tuple[Callable[[float, int], None], ...] = ()

    def observe(self, seconds: float, loop_id: int) -> None:
        """Count one beat's lateness."""
        index = 0
        for bound in self.BOUNDS:
            if seconds <= bound:
                break
            index += 1
        self.counts[index] += 1
        self.total += seconds
        self.maximum = max(self.maximum, seconds)
        for observer in self.observers:
            observer(seconds, loop_id)


class _LoopState:
    __slots__ = (
        "beat",
        "cpu_clock",
        "cpu_seen",
        "cpu_start",
        "loop",
        "pending",
        "ran_at",
        "samples",
        "sent_at",
        "stall_context",
        "stall_started",
        "stall_task",
        "stalled",
        "thread_id",
        "thread_name",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int, thread_name: str) -> None:
        self.loop = loop
        self.thread_id = thread_id
        self.thread_name = thread_name
        self.cpu_clock = _cpu_clock(thread_id)
        self.cpu_seen = _cpu_ns(self.cpu_clock)
        self.pending = False
        self.sent_at = 0
        self.ran_at = 0
        self.stalled = False
        self.samples: list[Sample] = []
        self.stall_started = 0
        self.cpu_start: int | None = None
        self.stall_task: Any = None
        self.stall_context: Any = None
        self.beat: Callable[[], None] = lambda: None


class Watchdog:
    """Watches loops for stalls longer than ``threshold`` seconds."""

    name = "watchdog"

    def __init__(
        self,
        threshold: float,
        emit: Callable[[StallRecord], None],
        kinds: FrameKinds,
        max_frames: int,
        delays: LoopDelays,
        context_of: Callable[[int], Any] | None = None,
    ) -> None:
        self.threshold_ns = int(threshold * 1e9)
        self.interval = self.interval_for(threshold)
        self.sample_interval = min(max(threshold / 20, 0.002), 0.01)
        self._emit = emit
        self._kinds = kinds
        self._max_frames = max_frames
        self._delays = delays
        self._context_of = context_of
        self._states: dict[int, _LoopState] = {}
        # Re-entrant: a check that finds a closed loop forgets it under the same lock.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._epoch_offset = time.time_ns() - _perf_ns()

    @staticmethod
    def interval_for(threshold: float) -> float:
        """Return the beat interval for a threshold.

        A beat every fifth of the threshold: a step of 1.5x the threshold is late by at
        least 1.3x, a step of half the threshold never by more than half.
        """
        return min(max(threshold / 5, 0.005), 0.1)

    # -- which loops -------------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop, thread_id: int, thread_name: str) -> None:
        """Start watching ``loop``, running on ``thread_id`` (idempotent)."""
        with self._lock:
            current = self._states.get(thread_id)
            if current is not None and current.loop is loop:
                return
            state = _LoopState(loop, thread_id, thread_name)
            delays = self._delays

            def beat() -> None:  # runs on the loop thread: two clock reads and a count
                now = _perf_ns()
                state.ran_at = now
                state.pending = False
                delays.observe((now - state.sent_at) / 1e9, id(loop))

            state.beat = beat
            self._states[thread_id] = state

    def forget(self, thread_id: int) -> None:
        """Stop watching the loop of ``thread_id`` (its loop stopped).

        A stall whose beat already ran is reported now rather than lost.
        """
        with self._lock:
            state = self._states.pop(thread_id, None)
            if state is not None and state.stalled and not state.pending:
                self._end_stall(state, _cpu_ns(state.cpu_clock))

    def flush(self) -> None:
        """Report every stall that has ended but was not reported yet."""
        with self._lock:
            for state in list(self._states.values()):
                if state.stalled and not state.pending:
                    self._end_stall(state, _cpu_ns(state.cpu_clock))

    def watched(self) -> list[asyncio.AbstractEventLoop]:
        """Return the loops being watched now."""
        with self._lock:
            return [s.loop for s in self._states.values()]

    def stalled_threads(self) -> frozenset[int]:
        """Return the loop threads that are stalled right now."""
        with self._lock:
            return frozenset(t for t, s in self._states.items() if s.stalled or s.pending and (
                _perf_ns() - s.sent_at > self.threshold_ns))

    # -- the thread ------------------------------------------------------------------

    def start(self) -> None:
        """Start the watchdog thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="loophound-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread; a stall in progress is reported as it stands."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        with self._lock:
            self._states.clear()

    def _run(self) -> None:
        try:
            expected = _perf_ns()
            tick = self.interval
            while not self._stop.wait(tick):
                now = _perf_ns()
                overslept = now - expected - int(tick * 1e9)
                stalled = False
                with self._lock:
                    for state in list(self._states.values()):
                        stalled = self._check(state, now, overslept) or stalled
                tick = self.sample_interval if stalled else self.interval
                expected = _perf_ns()
        except Exception:
            logger.exception("loophound: the watchdog failed and is disabled")

    def _check(self, state: _LoopState, now: int, overslept: int) -> bool:
        """Advance one loop's state; return True while it is stalled."""
        if state.loop.is_closed():
            self.forget(state.thread_id)  # reports a stall whose beat ran
            return False
        cpu = _cpu_ns(state.cpu_clock)
        cpu_delta = None if cpu is None or state.cpu_seen is None else cpu - state.cpu_seen
        state.cpu_seen = cpu
        starved = overslept > self.threshold_ns // 2
        # The loop thread burnt CPU while this thread could not run: it held the GIL.
        loop_busy = cpu_delta is None or cpu_delta * 2 >= overslept
        if state.pending:
            late = now - state.sent_at
            if late <= self.threshold_ns:
                return False
            if starved and not loop_busy:
                # The whole process did not run (SIGSTOP, a paused VM): not the loop's fault.
                self._reset(state, now)
                return False
            if not state.stalled:
                self._begin_stall(state, state.sent_at, cpu)
            self._sample(state)
            return True
        if state.stalled:
            self._end_stall(state, cpu)
        if starved and loop_busy and cpu_delta is not None:
            # Slept through a GIL-holding stall that may still be running: sample now,
            # at the first moment the GIL was free, and date the beat when it was due.
            due = now - overslept
            self._send(state, due)
            self._begin_stall(state, due, None if cpu is None else cpu - (cpu_delta or 0))
            self._sample(state)
            return True
        self._send(state, now)
        return False

    def _reset(self, state: _LoopState, now: int) -> None:
        state.stalled = False
        state.samples = []
        state.sent_at = now

    def _send(self, state: _LoopState, sent_at: int) -> None:
        state.pending = True
        state.sent_at = sent_at
        try:
            state.loop.call_soon_threadsafe(state.beat)
        except RuntimeError:  # closed meanwhile
            state.pending = False
            self.forget(state.thread_id)

    def _begin_stall(self, state: _LoopState, started: int, cpu: int | None) -> None:
        state.stalled = True
        state.samples = []
        state.stall_started = started
        state.cpu_start = cpu
        task = None
        try:
            task = asyncio.current_task(state.loop)
        except Exception:
            task = None
        state.stall_task = task
        context = None
        if self._context_of is not None:
            context = self._context_of(state.thread_id)
        if context is None and task is not None:
            get_context = getattr(task, "get_context", None)
            context = get_context() if get_context is not None else None
        state.stall_context = context

    def _sample(self, state: _LoopState) -> None:
        if len(state.samples) >= _MAX_SAMPLES:
            return
        frame = sys._current_frames().get(state.thread_id)
        if frame is None:
            return
        walk = walk_to_culprit(self._kinds, frame, _SCAN_LIMIT)
        codes = walk.codes
        culprit_frame = walk.culprit_frame
        probe = culprit_frame.f_back if culprit_frame is not None else None
        while probe is not None and len(codes) < self._max_frames:
            codes.append((probe.f_code, probe.f_lineno))
            probe = probe.f_back
        state.samples.append(Sample(codes, walk.culprit))

    def _end_stall(self, state: _LoopState, cpu: int | None) -> None:
        state.stalled = False
        duration = state.ran_at - state.stall_started
        used = None
        if cpu is not None and state.cpu_start is not None:
            used = (cpu - state.cpu_start) / 1e9
        record = StallRecord(state, duration, used)
        record.started_ns = state.stall_started + self._epoch_offset
        state.samples = []
        state.stall_task = None
        state.stall_context = None
        if duration >= self.threshold_ns:
            self._emit(record)
