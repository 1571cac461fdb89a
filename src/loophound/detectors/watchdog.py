"""The watchdog: a tick on each watched loop and one thread that samples stalls.

Each watched loop runs a tick of its own (``call_later``, so it works on asyncio,
uvloop and loops in any thread) that records when it ran and how late: the lateness
of every tick is the loop-delay distribution. One daemon thread serves every watched
loop: when a loop's tick is overdue by more than the threshold, the loop thread is
stuck, and the thread samples that thread's stack every few milliseconds until the
loop ticks again, then hands one stall record (start, duration, the sampled stacks,
the loop thread's CPU time) to the dispatcher.

Because the tick runs on the loop, the loop's progress is visible even when this
thread cannot get the GIL (a busy loop thread that releases the GIL for every
``epoll_wait`` can starve it for hundreds of milliseconds without stalling at all).

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
from types import CodeType, FrameType
from typing import Any

from loophound._context import (
    allowed_reason_in,
    in_flight,
    request_in,
    set_stall_listener,
    span_in,
    stall_listener,
)
from loophound._frames import FrameKinds, extend, walk_to_culprit

__all__ = ["LoopDelays", "StallRecord", "Watchdog"]

logger = logging.getLogger("loophound")
_perf_ns = time.perf_counter_ns
_MAX_SAMPLES = 2_000
#: ``due`` of a loop that is not ticking (parked while idle, or not started yet).
_PARKED = 1 << 62
#: Longest sleep of the watchdog thread (it wakes earlier for loops that may stall).
_MAX_SLEEP_NS = 500_000_000
_SCAN_LIMIT = 256
#: Loop threads whose stop time is kept (threads that run a loop each, churning).
_MAX_STOPPED = 1024


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
        "allowed",
        "context",
        "cpu",
        "duration_ns",
        "loop_id",
        "request",
        "samples",
        "span",
        "started_ns",
        "steps_timed",
        "task",
        "thread_id",
        "thread_name",
        "victims",
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
        #: An allow_blocking scope was open in the stalled task while it was sampled.
        self.allowed = state.stall_allowed
        #: The request of the stalled task, read when the stall began (a context is
        #: mutable: the request's scope is reset in it when the request ends).
        self.request = state.stall_request
        self.span = state.stall_span
        #: The callbacks detector times every step of this loop: a real stall is also
        #: a slow step, so a late tick without one came from outside (CPU starvation).
        self.steps_timed = state.steps_timed
        #: The other requests in flight on the loop when it stalled.
        self.victims = state.stall_victims


class LoopDelays:
    """Counts of tick lateness in fixed buckets (seconds), for every tick of every loop.

    Written by the loop threads (one increment per tick), read by exporters.
    """

    BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0.0
        self.maximum = 0.0
        self.observers: tuple[Callable[[float, int], None], ...] = ()

    def observe(self, seconds: float, loop_id: int) -> None:
        """Count one tick's lateness."""
        index = 0
        for bound in self.BOUNDS:
            if seconds <= bound:
                break
            index += 1
        self.counts[index] += 1
        self.total += seconds
        self.maximum = max(self.maximum, seconds)
        for observer in self.observers:
            try:
                observer(seconds, loop_id)
            except Exception:
                # A failing exporter is dropped and logged once, never the loop's problem.
                self.observers = tuple(o for o in self.observers if o is not observer)
                logger.exception("loophound: a loop-delay observer raised and was removed")


class _LoopState:
    __slots__ = (
        "active",
        "consumed",
        "cpu_clock",
        "cpu_seen",
        "cpu_start",
        "due",
        "last_tick",
        "looked",
        "loop",
        "peak",
        "samples",
        "stall_allowed",
        "stall_context",
        "stall_request",
        "stall_span",
        "stall_started",
        "stall_task",
        "stall_ticks",
        "stall_victims",
        "stalled",
        "steps_timed",
        "suspended_until",
        "thread_id",
        "thread_name",
        "tick_cpu",
        "ticks",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int, thread_name: str) -> None:
        self.loop = loop
        self.thread_id = thread_id
        self.thread_name = thread_name
        self.cpu_clock = _cpu_clock(thread_id)
        self.cpu_seen = _cpu_ns(self.cpu_clock)
        self.active = True
        #: When the loop's next tick is due (perf_counter ns); far away until started.
        self.due = _PARKED
        #: The loop thread's CPU time at the last tick (parking decision).
        self.tick_cpu: int | None = None
        #: When (perf ns) the tick last ran: the loop finished every step before it.
        self.last_tick = 0
        self.ticks = 0
        #: (lateness, when it ran) of the latest tick since ``consumed``, written by the
        #: loop thread in one assignment; the watchdog only moves ``consumed``.
        self.peak = (0, 0)
        #: Ticks that ran at or before this time were already accounted for.
        self.consumed = 0
        #: The end of the last window in which the whole process did not run; loop
        #: lateness that began before it is not the loop's fault.
        self.suspended_until = 0
        #: When (perf ns) this thread last looked at the loop: a suspension that ended
        #: before then has been seen.
        self.looked = 0
        self.stalled = False
        self.stall_ticks = 0
        self.samples: list[Sample] = []
        self.stall_started = 0
        self.cpu_start: int | None = None
        self.stall_task: Any = None
        self.stall_context: Any = None
        self.stall_allowed = False
        self.stall_request: Any = None
        self.stall_span: object | None = None
        self.stall_victims: tuple[str, ...] = ()
        self.steps_timed = False


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
        context_of: Callable[[object], Any] | None = None,
        parking: dict[int, Callable[[], None]] | None = None,
        step_started: Callable[[object], int | None] | None = None,
    ) -> None:
        self.threshold_ns = int(threshold * 1e9)
        self.interval = self.interval_for(threshold)
        self.sample_interval = min(max(threshold / 20, 0.002), 0.01)
        self._emit = emit
        self._kinds = kinds
        self._max_frames = max_frames
        self._delays = delays
        self._context_of = context_of
        #: thread id -> unpark, for loops whose tick is parked while they idle; the
        #: callbacks detector calls it at the loop's next step (asyncio loops only).
        self._parking = parking
        #: loop -> start of its running step (perf ns), where steps are timed.
        self._step_started = step_started
        self._states: dict[int, _LoopState] = {}
        #: When each loop thread's loop stopped (perf ns): its last step ended then.
        self._stopped: dict[int, int] = {}
        # Re-entrant: a check that finds a closed loop forgets it under the same lock.
        self._lock = threading.RLock()
        #: Set to wake the thread early: a new loop to plan for, or stop.
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._epoch_offset = time.time_ns() - _perf_ns()

    @staticmethod
    def interval_for(threshold: float) -> float:
        """Return the tick interval for a threshold.

        A tick every 0.3 threshold: a step of 1.5x the threshold is late by at least
        1.2x, a step of half the threshold never by more than half.
        """
        return min(max(threshold * 0.3, 0.005), 0.1)

    # -- which loops -------------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop, thread_id: int, thread_name: str) -> None:
        """Start watching ``loop``, running on ``thread_id`` (idempotent)."""
        with self._lock:
            current = self._states.get(thread_id)
            if current is not None and current.loop is loop and current.active:
                return
            if current is not None:
                current.active = False
            state = _LoopState(loop, thread_id, thread_name)
            delays = self._delays
            interval = self.interval
            interval_ns = int(interval * 1e9)
            loop_id = id(loop)
            parking = self._parking
            # Only where the callbacks detector sees every step can the tick rest while
            # the loop idles: the next step wakes it (uvloop runs its own handles).
            can_park = parking is not None and isinstance(loop, asyncio.BaseEventLoop)
            state.steps_timed = can_park
            wake = self._wake
            idle_cpu_ns = interval_ns // 50  # under 2 % of a core: the loop waited

            # The tick runs on the loop itself, so the loop's progress is visible even
            # when this thread cannot get the GIL. Its lateness is the loop delay.
            def tick() -> None:
                if not state.active:
                    return
                now = _perf_ns()
                late = now - state.due
                late = max(late, 0)
                peak = state.peak
                if late > peak[0] or peak[1] <= state.consumed:
                    state.peak = (late, now)
                state.ticks += 1
                state.last_tick = now
                cpu = _cpu_ns(state.cpu_clock) if can_park else None
                if (
                    cpu is not None
                    and state.tick_cpu is not None
                    and cpu - state.tick_cpu < idle_cpu_ns
                    and parking is not None
                ):
                    # Idle since the last tick: no wakeups until the loop has work again.
                    state.due = _PARKED
                    parking[thread_id] = unpark
                else:
                    state.due = now + interval_ns
                    loop.call_later(interval, tick)  # first: nothing below may stop ticks
                state.tick_cpu = cpu
                delays.observe(late / 1e9, loop_id)

            def unpark() -> None:  # on the loop thread, as a step begins
                if not state.active:
                    return
                state.due = _perf_ns() + interval_ns
                state.tick_cpu = _cpu_ns(state.cpu_clock)
                loop.call_later(interval, tick)
                wake.set()  # the watchdog plans its next look around this loop again

            def start() -> None:
                # The first tick, now: a stall in the loop's next step then ends at
                # the tick right after it, not one interval later.
                tick()

            # Due from now: a loop that is stuck before its first tick is stuck all the same.
            state.due = _perf_ns() + interval_ns
            self._states[thread_id] = state
            try:
                loop.call_soon_threadsafe(start)
            except RuntimeError:  # closed
                del self._states[thread_id]
        self._wake.set()  # plan the next look with this loop in it

    def forget(self, thread_id: int) -> None:
        """Stop watching the loop of ``thread_id`` (its loop stopped).

        A stall that has ended is reported now rather than lost.
        """
        with self._lock:
            state = self._states.pop(thread_id, None)
            if state is None:
                return
            if len(self._stopped) >= _MAX_STOPPED:
                self._stopped.clear()  # bounded: a forgotten stop only delays a call
            self._stopped[thread_id] = _perf_ns()
            state.active = False
            if state.stalled:
                # If the loop stopped right after the stalled step, it ended by now.
                ended = _perf_ns() if state.ticks == state.stall_ticks else None
                self._end_stall(state, _cpu_ns(state.cpu_clock), ended)

    def flush(self) -> None:
        """Report every stall that has ended but was not reported yet."""
        with self._lock:
            for state in list(self._states.values()):
                if state.stalled and state.ticks != state.stall_ticks:
                    self._end_stall(state, _cpu_ns(state.cpu_clock))

    def ticked_since(self, thread_id: int, since_perf_ns: int) -> bool:
        """True when the loop of ``thread_id`` ticked (or stopped) after ``since_perf_ns``.

        The step that was running then has ended: a call it made is complete.
        """
        state = self._states.get(thread_id)  # one read, no lock: a stale answer waits
        if state is not None and state.last_tick > since_perf_ns:
            return True
        stopped = self._stopped.get(thread_id)
        return stopped is not None and stopped > since_perf_ns

    def suspended_since(
        self, thread_id: int, since_epoch_ns: int, until_epoch_ns: int | None = None
    ) -> bool | None:
        """True when the process was found suspended (SIGSTOP) after ``since_epoch_ns``.

        A slow step that no stall explains is the loop's own slowness, unless the whole
        process stood still meanwhile. ``None``: not known yet, because this thread has
        not looked at the loop since ``until_epoch_ns`` (the step's end); after a
        SIGCONT the loop thread may end its step before this thread runs again.
        """
        with self._lock:
            state = self._states.get(thread_id)
            if state is None:
                return False
            if state.suspended_until + self._epoch_offset >= since_epoch_ns:
                return True
            if until_epoch_ns is not None and state.looked + self._epoch_offset < until_epoch_ns:
                return None
            return False

    def watched(self) -> list[asyncio.AbstractEventLoop]:
        """Return the loops being watched now."""
        with self._lock:
            return [s.loop for s in self._states.values()]

    def stalled_threads(self) -> frozenset[int]:
        """Return the loop threads that are stalled right now."""
        with self._lock:
            now = _perf_ns()
            return frozenset(
                t for t, s in self._states.items() if s.stalled or now - s.due > self.threshold_ns
            )

    # -- the thread ------------------------------------------------------------------

    def start(self) -> None:
        """Start the watchdog thread."""
        self._stopping = False
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name="loophound-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread; a stall in progress is reported as it stands."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        with self._lock:
            for state in self._states.values():
                state.active = False  # its tick stops rescheduling itself
                if state.stalled:
                    ended = _perf_ns() if state.ticks == state.stall_ticks else None
                    self._end_stall(state, _cpu_ns(state.cpu_clock), ended)
            self._states.clear()

    def after_fork_in_child(self) -> None:
        """Start over in a forked child: the parent's loops and thread are not here.

        The lock may have been held by the parent's watchdog thread at the fork, so it
        is made anew rather than taken.
        """
        self._lock = threading.RLock()
        self._wake = threading.Event()
        for state in self._states.values():
            state.active = False
        self._states = {}
        self._stopped = {}
        if self._parking is not None:
            self._parking.clear()
        self._epoch_offset = time.time_ns() - _perf_ns()
        self.start()

    def _run(self) -> None:
        try:
            tick = self.interval
            expected = _perf_ns() + int(tick * 1e9)
            while True:
                self._wake.wait(tick)
                if self._stopping:
                    return
                self._wake.clear()
                now = _perf_ns()
                with self._lock:
                    states = list(self._states.values())
                    threshold = self.threshold_ns
                    if any(s.stalled or now - s.due > threshold for s in states):
                        # Before anything else: after a GIL-holding C call this thread
                        # gets the GIL the moment the call returns to its caller, so this
                        # look at the loop thread's stack shows the line that made it.
                        snapshot = sys._current_frames()
                    else:
                        snapshot = {}
                    overslept = now - expected
                    stalled = self._check_all(states, now, overslept, snapshot)
                    del snapshot
                    tick = self._next_sleep(states, now, stalled=stalled)
                    del states  # hold no loop between looks: a closed one must be free
                expected = now + int(tick * 1e9)
        except Exception:
            logger.exception("loophound: the watchdog failed and is disabled")

    def _check_all(
        self,
        states: list[_LoopState],
        now: int,
        overslept: int,
        snapshot: dict[int, FrameType],
    ) -> bool:
        """Look at every loop; True if one is stalled (a method: no loop outlives it)."""
        stalled = False
        for state in states:
            stalled = self._check(state, now, overslept, snapshot) or stalled
        return stalled

    def _next_sleep(self, states: list[_LoopState], now: int, *, stalled: bool) -> float:
        """Sleep until the first moment a loop could be declared stalled (idle costs less).

        A loop whose tick is due at ``due`` cannot be stalled before ``due + threshold``;
        a stall that late is always still going on then, so waking at that moment
        catches it in the act. While a loop is stalled, sample every few milliseconds.
        """
        if stalled:
            return self.sample_interval
        earliest = min((s.due for s in states), default=_PARKED)
        earliest = min(earliest, now + _MAX_SLEEP_NS) + self.threshold_ns
        return min(max((earliest - now) / 1e9, self.sample_interval), _MAX_SLEEP_NS / 1e9)

    def _check(
        self, state: _LoopState, now: int, overslept: int, snapshot: dict[int, FrameType]
    ) -> bool:
        """Advance one loop's state; return True while it is stalled."""
        try:
            return self._advance(state, now, overslept, snapshot)
        finally:
            state.looked = now

    def _advance(
        self, state: _LoopState, now: int, overslept: int, snapshot: dict[int, FrameType]
    ) -> bool:
        if state.loop.is_closed():
            self.forget(state.thread_id)  # reports a stall that ended
            return False
        cpu = _cpu_ns(state.cpu_clock)
        cpu_delta = None if cpu is None or state.cpu_seen is None else cpu - state.cpu_seen
        state.cpu_seen = cpu
        starved = overslept > self.threshold_ns // 2
        # The loop thread burnt CPU while this thread could not run: it held the GIL.
        loop_busy = cpu_delta is None or cpu_delta * 2 >= overslept
        if starved and not loop_busy and not state.stalled:
            # The whole process did not run (SIGSTOP, a paused VM): not the loop's
            # fault. Ignore this gap, and a late tick it caused, until the loop ticks.
            state.suspended_until = now
            state.consumed = now
            return False
        if state.stalled:
            if state.ticks != state.stall_ticks:  # the loop moved again
                self._end_stall(state, cpu)
                return False
            self._sample(state, snapshot)
            return True
        late, ran = state.peak
        if (
            ran > state.consumed
            and late > self.threshold_ns
            and ran - late >= state.suspended_until
        ):
            # A stall that began and ended between two looks (this thread could not
            # run in time): the late tick proves it; no sample names its line.
            self._begin_stall(state, ran - late, None)
            self._end_stall(state, None, ran)
            return False
        if now - state.due <= self.threshold_ns or state.due < state.suspended_until:
            return False
        # The loop has not ticked for longer than the threshold. After a GIL-holding C
        # call this is the first moment this thread ran: the sample names the caller.
        # CPU time at the previous look, shortly before the stall began: the stall is
        # noticed a threshold after it started, and that part counts too.
        cpu_at_start = cpu - cpu_delta if cpu is not None and cpu_delta is not None else cpu
        if state.tick_cpu is not None and cpu is not None:
            # Better: the loop thread's CPU time at its last tick, read on that thread
            # just before the stuck step began (asyncio loops): the whole stall counts.
            cpu_at_start = min(state.tick_cpu, cpu)
        self._begin_stall(state, state.due, cpu_at_start)
        self._sample(state, snapshot)
        return True

    def _begin_stall(self, state: _LoopState, started: int, cpu: int | None) -> None:
        state.stalled = True
        state.stall_ticks = state.ticks
        state.consumed = _perf_ns()
        state.samples = []
        state.stall_started = started
        state.cpu_start = cpu
        task = None
        try:
            task = asyncio.current_task(state.loop)
        except Exception:
            task = None
        state.stall_task = task
        # The running task's own context first (3.12+); the running handle's context
        # (from the callbacks detector) where tasks cannot say (3.11).
        context = None
        get_context = getattr(task, "get_context", None)
        if get_context is not None:
            context = get_context()
        if context is None and self._context_of is not None:
            context = self._context_of(state.loop)
        state.stall_context = context
        state.stall_request = request_in(context)
        state.stall_span = span_in(context)
        # Copied under the GIL while the loop thread is stuck: it cannot change now.
        waiting = set(in_flight.get(id(state.loop), ()))
        own = state.stall_request.get("id") if isinstance(state.stall_request, dict) else None
        waiting.discard(own)
        if context is None:
            # Whose step this is cannot be read (uvloop on 3.11): the culprit's own
            # request could not be told from the ones that waited, so none are named.
            waiting.clear()
        state.stall_victims = tuple(sorted(waiting))
        state.stall_allowed = False
        listener = stall_listener()
        if listener is not None and waiting and allowed_reason_in(context) is None:
            try:
                listener(
                    state.thread_id,
                    self._stall_began_at(state, started) + self._epoch_offset,
                    state.stall_victims,
                    state.stall_span,
                )
            except Exception:
                logger.exception("loophound: a stall listener raised; it is removed")
                set_stall_listener(None)

    def _stall_began_at(self, state: _LoopState, due: int) -> int:
        """Return when the stuck step began: exact where steps are timed, else the last
        on-time tick (the step began after it), so that a span from here covers it."""
        started_of = self._step_started
        step = started_of(state.loop) if started_of is not None else None
        if step is not None and due - self.threshold_ns - int(self.interval * 1e9) <= step <= due:
            return step
        return due - int(self.interval * 1e9)

    def _sample(self, state: _LoopState, snapshot: dict[int, FrameType]) -> None:
        if len(state.samples) >= _MAX_SAMPLES:
            return
        frame = snapshot.get(state.thread_id)
        if frame is None:
            return
        if allowed_reason_in(state.stall_context) is not None:
            # Read now: the scope may close before the stall is reported.
            state.stall_allowed = True
        walk = walk_to_culprit(self._kinds, frame, _SCAN_LIMIT)
        if walk.culprit_frame is None:
            # Only the loop's own frames: the stalled step already ended (or had not
            # begun); this sample cannot name a culprit.
            walk.culprit = -1
        extend(walk, self._max_frames)
        state.samples.append(Sample(walk.codes, walk.culprit))

    def _end_stall(self, state: _LoopState, cpu: int | None, ended: int | None = None) -> None:
        state.stalled = False
        if ended is None:
            ended = state.peak[1]  # when the late tick that ended the stall ran
        duration = ended - state.stall_started
        state.consumed = max(state.consumed, ended)
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
