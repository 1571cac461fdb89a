"""The callbacks detector: the exact wall time of every loop step on asyncio loops.

Wraps ``asyncio.events.Handle._run``, through which every callback and task step of
an asyncio loop runs (uvloop runs its own handles: the watchdog covers it). The
wrapper remembers the running handle on its loop, so the recorder and the watchdog
can tell which step and which task a blocking call or a stall belongs to, and reports
each step that took longer than the threshold or that made a blocking call.
"""

from __future__ import annotations

import asyncio.events
import threading
import time
from asyncio.events import _get_running_loop
from collections.abc import Callable
from typing import Any

from loophound._context import span_in

__all__ = ["CallbacksDetector", "StepRecord"]

_get_ident = threading.get_ident
_perf_ns = time.perf_counter_ns
_time_ns = time.time_ns


class StepRecord:
    """One loop step that was slow or made a blocking call."""

    __slots__ = (
        "callback",
        "context",
        "duration_ns",
        "handle_id",
        "slow",
        "span",
        "started_ns",
        "thread_id",
        "thread_name",
    )

    def __init__(
        self,
        thread_id: int,
        handle_id: int,
        started_ns: int,
        duration_ns: int,
        slow: bool,
        callback: object,
        context: object,
    ) -> None:
        self.context = context
        self.thread_name = threading.current_thread().name
        self.thread_id = thread_id
        self.handle_id = handle_id
        self.started_ns = started_ns
        self.duration_ns = duration_ns
        self.slow = slow
        self.callback = callback
        #: The active trace span of the step, read now: the task moves on.
        self.span = span_in(context) if slow else None


class _Step:
    """The step one loop runs: written by the step wrapper, read by the others."""

    __slots__ = ("handle", "started")

    def __init__(self) -> None:
        self.handle: Any = None
        #: When (perf_counter ns) the loop's latest step began; 0 before the first.
        self.started = 0


#: The attribute of a loop that holds its ``_Step``. On the loop itself: the step
#: wrapper reaches it from the handle (``handle._loop``) with two attribute reads, where
#: a table by thread would cost a thread id and a dictionary lookup on every step.
STEP_ATTRIBUTE = "_loophound_step"


def _step_of_loop(loop: object) -> _Step | None:
    try:
        step = getattr(loop, STEP_ATTRIBUTE, None)
    except Exception:  # a loop whose attribute lookup misbehaves
        return None
    return step if isinstance(step, _Step) else None


def _new_step(handle: Any) -> _Step:
    """Give the handle's loop its step record (its first step under loophound)."""
    step = _Step()
    try:
        setattr(handle._loop, STEP_ATTRIBUTE, step)
    except Exception:  # noqa: S110 - a loop without attributes: steps timed, not tracked
        pass
    return step


class StepTracker:
    """Shared by the recorder and the watchdog: what each loop's step wrapper saw.

    The step records live on the loops (``STEP_ATTRIBUTE``), written by the step
    wrapper of whichever guard is installed; ``current_step`` counts only the steps
    that began under this tracker's own wrapper.
    """

    def __init__(self) -> None:
        #: ids of running handles during which a blocking call was recorded
        self.marked: set[int] = set()
        #: thread id -> unpark callable of a loop whose watchdog tick rests while idle
        self.parked: dict[int, Any] = {}
        #: When (perf_counter ns) this tracker's step wrapper was installed.
        self.since = 1 << 62

    def current_step(self) -> int:
        """Return the id of the handle running on this thread's loop (0 outside steps).

        Also 0 in a step that began before this tracker's wrapper was installed (a
        guard installed in the middle of another's step): that step's end is seen
        by the other guard's wrapper, never this tracker's, so it must not be marked.
        """
        step = _step_of_loop(_get_running_loop())
        if step is None or step.started < self.since:
            return 0
        handle = step.handle
        return 0 if handle is None else id(handle)

    @staticmethod
    def context_of(loop: object) -> Any:
        """Return the contextvars context of the step ``loop`` runs now."""
        step = _step_of_loop(loop)
        handle = None if step is None else step.handle
        return None if handle is None else getattr(handle, "_context", None)

    @staticmethod
    def started_of(loop: object) -> int | None:
        """Return when the latest step of ``loop`` began (perf_counter ns)."""
        step = _step_of_loop(loop)
        return step.started if step is not None and step.started else None


class CallbacksDetector:
    """Times ``Handle._run``; reports steps over ``threshold`` or with incidents."""

    name = "callbacks"

    def __init__(
        self, threshold: float, tracker: StepTracker, emit: Callable[[StepRecord], None]
    ) -> None:
        self._threshold_ns = int(threshold * 1e9)
        self._tracker = tracker
        self._emit = emit
        self._original: Callable[[Any], None] | None = None
        #: Called with the thread id when a step that made a blocking call ends.
        self.on_step_end: Callable[[int], None] | None = None

    def install(self) -> None:
        """Wrap ``Handle._run`` (TimerHandle inherits it)."""
        original = asyncio.events.Handle._run
        threshold = self._threshold_ns
        tracker = self._tracker
        marked = tracker.marked
        parked = tracker.parked
        emit = self._emit
        epoch_offset = _time_ns() - _perf_ns()

        def _run(handle: Any) -> None:
            if parked:
                unpark = parked.pop(_get_ident(), None)
                if unpark is not None:
                    try:
                        unpark()
                    except Exception:  # noqa: S110 - never let loophound break a loop step
                        pass
            try:
                step = handle._loop._loophound_step  # STEP_ATTRIBUTE, read as fast as it goes
            except Exception:
                step = _new_step(handle)
            outer = step.handle  # a step run inside a step (a re-entered loop) is put back
            step.handle = handle
            start = step.started = _perf_ns()
            try:
                original(handle)
            finally:
                took = _perf_ns() - start
                step.handle = outer
                # id() raises an audit event (a call into every audit hook): only when
                # the step is slow or some step made a blocking call.
                if took >= threshold or marked:
                    key = id(handle)
                    if took >= threshold or key in marked:
                        marked.discard(key)
                        try:
                            tid = _get_ident()
                            on_step_end = self.on_step_end
                            if on_step_end is not None:
                                on_step_end(tid)
                            emit(
                                StepRecord(
                                    tid,
                                    key,
                                    start + epoch_offset,
                                    took,
                                    took >= threshold,
                                    handle._callback,
                                    handle._context,
                                )
                            )
                        except Exception:  # noqa: S110 - never let loophound break a loop step
                            pass
                # As Handle._run does: a traceback made in this step (a cancelled
                # future's) links this frame through f_back, and the handle leads back
                # to that traceback. Holding it would leave a reference cycle of the
                # task, its coroutine and their frames for the garbage collector on
                # every cancellation (Django cancels one per request: under the load
                # benchmark the collector took 125 µs per request instead of 73).
                handle = outer = None

        _run.__wrapped__ = original  # type: ignore[attr-defined]
        self._original = original
        tracker.since = _perf_ns()  # every step that begins from here on is this wrapper's
        asyncio.events.Handle._run = _run  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        """Restore ``Handle._run``."""
        if self._original is not None:
            asyncio.events.Handle._run = self._original  # type: ignore[method-assign,assignment]
            self._original = None
        # The loops' steps are left alone: wrappers still running put their handles back.
        self._tracker.marked.clear()
