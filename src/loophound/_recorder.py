"""What happens on the loop thread when a detector sees a blocking primitive.

Everything here runs on the event loop's thread, inside the user's call: it walks raw
frames, applies allow rules, machinery rules and the rate cap, decides whether to
raise, and hands a raw record to the dispatcher. It never formats text, reads source
or does I/O.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from types import CodeType, FrameType
from typing import Any

from loophound._allow import AllowRules
from loophound._config import Config
from loophound._context import allowed_reason, current_request, current_span
from loophound._frames import FrameKinds, extend, walk_to_culprit
from loophound.detectors.callbacks import StepTracker
from loophound.exceptions import BlockingCallError, BlockingCallWarning

__all__ = ["RawIncident", "Recorder"]

_current_task = asyncio.current_task
_get_ident = threading.get_ident
_time_ns = time.time_ns
_perf_ns = time.perf_counter_ns
#: How far to look for a culprit before giving up (deep Django stacks are ~80 frames).
_SCAN_LIMIT = 256
#: Without step boundaries, primitives this close together under one frame are one call.
_ANCHOR_WINDOW_NS = 100_000_000
#: Distinct call sites remembered by the rate cap before expired windows are swept.
_RATE_TABLE_LIMIT = 10_000


class RawIncident:
    """A blocking call as recorded on the loop thread: raw frames, no text yet."""

    __slots__ = (
        "anchor_name",
        "codes",
        "continuation",
        "culprit",
        "detail",
        "detector",
        "duration",
        "globals",
        "group",
        "kind",
        "operation",
        "quiet",
        "request",
        "span",
        "started_at",
        "step",
        "suppressed",
        "task",
        "thread_id",
        "thread_name",
    )

    def __init__(
        self,
        operation: str,
        detector: str,
        detail: object,
        codes: list[tuple[CodeType, int]],
        culprit: int,
        globals_: Mapping[str, Any] | None,
        *,
        quiet: bool,
        suppressed: int,
        group: int = 0,
        step: int = 0,
        anchor_name: tuple[str, str] | None = None,
    ) -> None:
        self.kind = "call"
        self.continuation = False
        self.group = group
        self.step = step
        #: (module, qualname) of the function the user called, named on the dispatcher.
        self.anchor_name = anchor_name
        self.operation = operation
        self.detector = detector
        self.detail = detail
        self.codes = codes
        self.culprit = culprit
        self.globals = globals_
        self.quiet = quiet
        self.suppressed = suppressed
        self.started_at = _time_ns()
        self.duration: float | None = None
        self.thread_id = _get_ident()
        self.thread_name = threading.current_thread().name
        try:
            self.task: asyncio.Task[Any] | None = _current_task()
        except RuntimeError:
            self.task = None
        self.request = current_request()
        self.span = current_span()


def continuation(operation: str, detector: str, group: int) -> RawIncident:
    """Return a light record of one more primitive of an incident already recorded."""
    raw = RawIncident.__new__(RawIncident)
    raw.continuation = True
    raw.operation = operation
    raw.detector = detector
    raw.group = group
    raw.step = 0
    raw.anchor_name = None
    raw.started_at = _time_ns()
    raw.duration = None
    raw.thread_id = _get_ident()
    return raw


class _RateCap:
    """A fixed window per call site: ``limit`` incidents per ``window`` seconds."""

    __slots__ = ("_limit", "_table", "_window_ns")

    def __init__(self, limit: int, window: float) -> None:
        self._limit = limit
        self._window_ns = int(window * 1e9)
        self._table: dict[tuple[str, CodeType, int], list[int]] = {}

    def admit(self, key: tuple[str, CodeType, int]) -> int:
        """Return -1 when over the cap, else how many were suppressed before this one."""
        now = _perf_ns()
        entry = self._table.get(key)
        if entry is None:
            if len(self._table) >= _RATE_TABLE_LIMIT:
                self._sweep(now)
            self._table[key] = [now, 1, 0]
            return 0
        if now - entry[0] >= self._window_ns:
            suppressed = entry[2]
            entry[0], entry[1], entry[2] = now, 1, 0
            return suppressed
        if entry[1] >= self._limit:
            entry[2] += 1
            return -1
        entry[1] += 1
        suppressed, entry[2] = entry[2], 0
        return suppressed

    def drain(self) -> list[tuple[tuple[str, CodeType, int], int]]:
        """Return and reset the calls suppressed since each site's last admitted one."""
        drained = []
        for key, entry in list(self._table.items()):
            count = entry[2]
            if count:
                entry[2] = 0
                drained.append((key, count))
        return drained

    def _sweep(self, now: int) -> None:
        expired = [k for k, v in self._table.items() if now - v[0] >= self._window_ns]
        for key in expired:
            del self._table[key]
        if len(self._table) >= _RATE_TABLE_LIMIT:
            self._table.clear()


class _Strictness:
    """Whether the warnings filters turn ``BlockingCallWarning`` into an error.

    Read once per change of ``warnings.filters`` (``catch_warnings`` replaces the list,
    ``filterwarnings`` puts its filter first), so the usual case costs a few compares.
    The list and its first filter are held, not their ids: a list freed at the end of
    one ``catch_warnings`` block is often reallocated at the same address by the next.
    """

    def __init__(self) -> None:
        self._seen: tuple[object, int, object] = (None, -1, None)
        self._relevant: list[tuple[Any, ...]] = []

    def is_error(self, operation: str, module: str, lineno: int) -> bool:
        filters = warnings.filters
        seen_list, seen_len, seen_first = self._seen
        first = filters[0] if filters else None
        if filters is not seen_list or len(filters) != seen_len or first is not seen_first:
            self._relevant = [
                f
                for f in filters
                if isinstance(f[2], type) and issubclass(BlockingCallWarning, f[2])
            ]
            self._seen = (filters, len(filters), first)
        if not any(f[0] == "error" for f in self._relevant):
            return False
        message = f"{operation} blocked the event loop"
        for action, msg, _category, mod, line in self._relevant:
            if msg is not None and not msg.match(message):
                continue
            if mod is not None and not mod.match(module):
                continue
            if line and line != lineno:
                continue
            return bool(action == "error")
        return False


class Stats:
    """Counters of what the guard saw and what it dropped (read from any thread)."""

    __slots__ = (
        "allowed",
        "dispatched",
        "dropped",
        "incidents",
        "machinery",
        "merged",
        "rate_capped",
        "sink_failures",
    )

    def __init__(self) -> None:
        self.incidents = 0
        self.allowed = 0
        self.machinery = 0
        self.merged = 0
        self.rate_capped = 0
        self.dropped = 0
        self.dispatched = 0
        self.sink_failures = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict."""
        return {name: getattr(self, name) for name in self.__slots__}


class Recorder:
    """The loop-thread half of the guard: turns a primitive into a raw incident."""

    def __init__(self, config: Config, submit: Callable[[RawIncident], None], stats: Stats) -> None:
        self.config = config
        self.kinds = FrameKinds(config.code_roots, config.include_modules, config.exclude_modules)
        self.allow = AllowRules(config.allow, self.kinds)
        self.stats = stats
        self._submit = submit
        self._rate = _RateCap(config.rate_limit, config.rate_window)
        self._strict = _Strictness()
        self._raise = config.mode == "raise"
        self._imports = config.imports
        self._max_frames = config.max_frames
        self._sample = config.stack_sample_rate
        #: Threads currently inside a primitive loophound is timing or reporting.
        self.busy: set[int] = set()
        #: The frame each loop thread's last incident called into: the same frame
        #: object again means the same user call (``urlopen`` → DNS, connect, send).
        self._anchors: dict[int, tuple[FrameType, int, int]] = {}
        #: The same for module loads, kept apart: a lazy import in the middle of a
        #: user call must not end that call's anchor (one call, then one more event).
        self._import_anchors: dict[int, tuple[FrameType, int, int]] = {}
        #: The incident group each anchor started (0: it was rate-capped, so its
        #: further primitives are dropped too).
        self._groups: dict[int, int] = {}
        self._next_group = itertools.count(1).__next__
        #: Which loop step each thread runs (set when the callbacks detector is on).
        self.tracker: StepTracker | None = None
        #: Called on the thread whose loop started or stopped (loop discovery).
        self.on_loop_change: Callable[[], None] | None = None

    def end_step(self, thread_id: int) -> None:
        """Forget the anchors of a loop step that ended (called by the callbacks detector).

        Also releases the frames they hold, so a finished call's locals are not kept.
        """
        self._anchors.pop(thread_id, None)
        self._import_anchors.pop(thread_id, None)
        self._groups.pop(thread_id, None)

    def drain_suppressed(self) -> list[tuple[tuple[str, CodeType, int], int]]:
        """Return the calls the rate cap suppressed and no admitted event counted yet."""
        return self._rate.drain()

    def forget_thread_state(self) -> None:
        """Drop remembered anchors (at uninstall, so no frame outlives the guard)."""
        self._anchors.clear()
        self._import_anchors.clear()
        self._groups.clear()
        self.busy.clear()

    def begin(
        self, operation: str, detector: str, detail: object, frame: FrameType | None
    ) -> RawIncident | None:
        """Decide about a primitive about to run on the loop thread.

        Returns the raw incident to complete and submit, or ``None`` when the call is
        machinery, allowed, part of an incident already reported, or over the rate
        cap. Raises ``BlockingCallError`` in raise mode or when the warnings filters
        make ``BlockingCallWarning`` an error.
        """
        if allowed_reason() is not None:
            self.stats.allowed += 1
            return None
        walk = walk_to_culprit(self.kinds, frame, _SCAN_LIMIT, stop_at_machinery=True)
        if walk.machinery:
            self.stats.machinery += 1
            return None
        quiet = False
        if walk.import_name is not None:
            if self._imports == "ignore":
                return None
            operation, detail = "import", walk.import_name
            quiet = self._imports == "quiet"
        if self.allow and self.allow.match(operation, frame) is not None:
            self.stats.allowed += 1
            return None
        tid = _get_ident()
        tracker = self.tracker
        step = tracker.current_step() if tracker is not None else 0
        anchor = walk.anchor
        if anchor is not None:
            anchors = self._anchors if walk.import_name is None else self._import_anchors
            now = _perf_ns()
            held = anchors.get(tid)
            # The same frame object in the same loop step is the same user call. A
            # library coroutine's frame survives its awaits, so the step matters; with
            # no step boundaries (uvloop), a short time window stands in for them.
            if (
                held is not None
                and held[0] is anchor
                and held[1] == step
                and (step or now - held[2] < _ANCHOR_WINDOW_NS)
            ):
                self.stats.merged += 1
                group = self._groups.get(tid, 0)
                if walk.import_name is not None or not group:
                    return None
                return continuation(operation, detector, group)
            anchors[tid] = (anchor, step, now)
        group = self._next_group()
        if anchor is not None and walk.import_name is None:
            self._groups[tid] = 0  # until admitted by the rate cap below
        self.stats.incidents += 1
        codes = walk.codes
        culprit = walk.culprit
        culprit_frame = walk.culprit_frame
        key_code, key_line = codes[culprit] if culprit >= 0 else (None, 0)
        suppressed = self._rate.admit((operation, key_code, key_line))  # type: ignore[arg-type]
        self._maybe_raise(operation, culprit_frame, quiet=quiet)
        if suppressed < 0:
            self.stats.rate_capped += 1
            return None
        if step and tracker is not None:
            tracker.marked.add(step)  # the step's end is reported, to close its incidents
        if self._sample >= 1.0 or random.random() < self._sample:  # noqa: S311 - not crypto
            extend(walk, self._max_frames)
        globals_ = culprit_frame.f_globals if culprit_frame is not None else None
        anchor_name = None
        if anchor is not None and walk.import_name is None:
            self._groups[tid] = group
            anchor_name = (self.kinds.module_of(anchor), anchor.f_code.co_qualname)
        return RawIncident(
            operation,
            detector,
            detail,
            codes,
            culprit,
            globals_,
            quiet=quiet,
            suppressed=suppressed,
            group=group,
            step=step,
            anchor_name=anchor_name,
        )

    def _maybe_raise(self, operation: str, frame: FrameType | None, *, quiet: bool) -> None:
        if quiet:
            return
        if not self._raise:
            module = self.kinds.module_of(frame) if frame is not None else ""
            lineno = frame.f_lineno if frame is not None else 0
            if not self._strict.is_error(operation, module, lineno):
                return
        where = ""
        if frame is not None:
            where = f" at {frame.f_code.co_filename}:{frame.f_lineno}"
        raise BlockingCallError(
            f"{operation} would block the event loop{where}. Run it off the loop "
            "(await asyncio.to_thread(...) or asgiref's sync_to_async) or allow it with "
            "loophound.allow_blocking('reason')."
        )

    def submit(self, raw: RawIncident) -> None:
        """Hand a finished raw incident to the dispatcher (never blocks)."""
        self._submit(raw)

    def report(
        self, operation: str, detector: str, detail: object, frame: FrameType | None
    ) -> None:
        """Record and submit a primitive that has no duration (an audit event)."""
        raw = self.begin(operation, detector, detail, frame)
        if raw is not None:
            self._submit(raw)


def caller_frame(depth: int) -> FrameType | None:
    """Return the frame ``depth`` levels above the caller, or ``None`` past the top."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None
