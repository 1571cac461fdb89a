"""The dispatcher thread: turns raw incidents into Events and feeds the sinks.

The loop thread only appends to a queue that never blocks; when it is full the
incident is dropped and counted. A sink that raises is disabled and logged once; a
sink that hangs delays only this thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from types import CodeType
from typing import Protocol

from loophound._events import Event, Frame, RequestRecord, fingerprint_of
from loophound._frames import relative_to_import_root
from loophound._merge import Merger
from loophound._recorder import RawIncident, Stats
from loophound._stall_events import StallEvents

__all__ = ["Dispatcher", "Sink"]

logger = logging.getLogger("loophound")


class Sink(Protocol):
    """Receives every Event on the dispatcher thread."""

    name: str

    def deliver(self, event: Event) -> None:
        """Take one event; may raise (the sink is then disabled) or be slow."""

    def close(self) -> None:
        """Release what the sink holds (files); called once at uninstall."""


#: A sink may also take requests: ``deliver_request(record: RequestRecord) -> None``.
REQUEST_METHOD = "deliver_request"
#: ... and say whether it wants them now: ``wants_requests() -> bool`` (else it always does).
WANTS_REQUESTS_METHOD = "wants_requests"


class Suppressed:
    """Calls the rate cap dropped, per call site: ``(operation, code, line)`` -> count."""

    __slots__ = ("counts",)

    def __init__(self, counts: list[tuple[tuple[str, CodeType, int], int]]) -> None:
        self.counts = counts


#: A sink may also count them: ``deliver_suppressed(fingerprint: str, count: int)``.
SUPPRESSED_METHOD = "deliver_suppressed"


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class Dispatcher:
    """Owns the queue, the thread, the merger and the sinks of one guard."""

    def __init__(
        self,
        sinks: list[Sink],
        stats: Stats,
        queue_size: int,
        max_frames: int = 1000,
        *,
        hold: float = 0.0,
        wait_for_stalls: bool = False,
        stalled_threads: Callable[[], frozenset[int]] | None = None,
        suspended_since: Callable[[int, int, int | None], bool | None] | None = None,
        ticked_since: Callable[[int, int], bool] | None = None,
        tick_ns: int = 0,
    ) -> None:
        self._sinks: tuple[Sink, ...] = tuple(sinks)
        self._close_lock = threading.Lock()
        self._closed = False
        self._max_frames = max_frames
        self._stats = stats
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._limit = queue_size
        self._frames: dict[tuple[CodeType, int], Frame] = {}
        self._fingerprints: dict[tuple[str, CodeType | None, int], str] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stall_events = StallEvents(self._frame, self._fingerprint, self._pid)
        self._merger = Merger(
            self.build,
            self._stall_events.stall,
            self._stall_events.step,
            hold_ns=int(hold * 1e9),
            wait_for_stalls=wait_for_stalls,
            stalled_threads=stalled_threads or frozenset,
            suspended_since=suspended_since,
            ticked_since=ticked_since,
            tick_ns=tick_ns,
        )

    def start(self) -> None:
        """Start the daemon thread (it never keeps the process alive)."""
        self._thread = threading.Thread(target=self._run, name="loophound-dispatcher", daemon=True)
        self._thread.start()

    def after_fork_in_child(self) -> None:
        """Start over in a forked child: a new queue and thread, the same sinks.

        Records queued in the parent are the parent's to deliver; the child drops its
        copy of them so that nothing is written twice.
        """
        self._queue = queue.SimpleQueue()
        self._close_lock = threading.Lock()  # a parent's thread may have held it
        self._pid = os.getpid()
        self._stall_events.pid = self._pid
        self._merger.drain()
        if self._thread is not None:
            self.start()

    def submit(self, record: object) -> None:
        """Queue a record from any detector; drop and count when full or stopped."""
        q = self._queue
        if self._thread is None or q.qsize() >= self._limit:
            self._stats.dropped += 1
            return
        q.put(record)

    def _queue_empty(self) -> bool:
        return self._queue.qsize() == 0

    def add_sink(self, sink: Sink) -> None:
        """Add a sink (copy on write: the dispatcher thread reads a tuple)."""
        self._sinks = (*self._sinks, sink)

    def remove_sink(self, sink: Sink) -> None:
        """Remove a sink added with ``add_sink``."""
        self._sinks = tuple(s for s in self._sinks if s is not sink)

    def wants_requests(self) -> bool:
        """Whether a sink would take a request record now (from any thread).

        The middleware asks before it times a request's thread hops: with no taker,
        that timing and the record are skipped (they cost every request CPU).
        """
        for sink in self._sinks:
            if getattr(sink, REQUEST_METHOD, None) is None:
                continue
            wants = getattr(sink, WANTS_REQUESTS_METHOD, None)
            try:
                if wants is None or wants():
                    return True
            except Exception:
                return True  # the sink decides at delivery (and is disabled if it raises)
        return False

    def flush(self, timeout: float) -> bool:
        """Wait until every incident queued before this call was delivered."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return True
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def stop(self, timeout: float) -> None:
        """Deliver what is queued (up to ``timeout``), stop the thread, close sinks.

        A thread still delivering after ``timeout`` (a hung sink, or ``uninstall()``
        called from a sink) closes the sinks itself when it reaches the stop: a sink is
        never closed under a delivery that is still running.
        """
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._thread = None
        if thread is None or not thread.is_alive():
            self._close_sinks()

    def _close_sinks(self) -> None:
        """Close every sink once (the caller's thread or the dispatcher's, whichever is last)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("loophound: closing sink %r failed", sink.name)

    def _run(self) -> None:
        get = self._queue.get
        merger = self._merger
        while True:
            deadline = merger.next_deadline()
            item: object = None
            if deadline is None:
                item = get()
            else:
                try:
                    item = get(timeout=max(0.0, (deadline - time.perf_counter_ns()) / 1e9))
                except queue.Empty:
                    item = None
            try:
                if item is _STOP:
                    self._deliver_all(merger.drain())
                    self._close_sinks()
                    return
                if isinstance(item, _Flush):
                    self._deliver_all(merger.drain())
                    item.done.set()
                    continue
                if isinstance(item, RequestRecord):
                    self._deliver_request(item)
                elif isinstance(item, Suppressed):
                    self._deliver_suppressed(item)
                elif item is not None:
                    self._deliver_all(merger.add(item))
                self._deliver_all(merger.due(self._queue_empty))
            except Exception:
                logger.exception("loophound: building an event failed; it was dropped")

    def _deliver_all(self, events: list[Event]) -> None:
        for event in events:
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        self._stats.dispatched += 1
        self._each_sink("deliver", event)

    def _deliver_suppressed(self, item: Suppressed) -> None:
        for (operation, code, line), count in item.counts:
            fingerprint = self._fingerprints.get((operation, code, line))
            if fingerprint is not None:  # else no event of that site was ever built
                self._each_sink(SUPPRESSED_METHOD, fingerprint, count)

    def _deliver_request(self, record: RequestRecord) -> None:
        self._each_sink(REQUEST_METHOD, record)

    def _each_sink(self, method: str, *args: object) -> None:
        """Call ``method`` on every sink that has it; a sink that raises is disabled."""
        for sink in self._sinks:
            deliver = getattr(sink, method, None)
            if deliver is None:
                continue
            try:
                deliver(*args)
            except Exception:
                self._stats.sink_failures += 1
                self.remove_sink(sink)
                logger.exception(
                    "loophound: the %r sink raised and is disabled for this guard", sink.name
                )

    def _frame(self, code: CodeType, lineno: int) -> Frame:
        key = (code, lineno)
        frame = self._frames.get(key)
        if frame is None:
            frame = Frame(code.co_filename, lineno, code.co_qualname)
            if len(self._frames) < 100_000:
                self._frames[key] = frame
        return frame

    def _fingerprint(self, operation: str, code: CodeType | None, culprit: Frame | None) -> str:
        key = (operation, code, culprit.lineno if culprit else 0)
        fingerprint = self._fingerprints.get(key)
        if fingerprint is None:
            rel = relative_to_import_root(culprit.filename) if culprit else ""
            fingerprint = fingerprint_of(operation, culprit, rel)
            if len(self._fingerprints) < 100_000:
                self._fingerprints[key] = fingerprint
        return fingerprint

    def build(self, raw: RawIncident) -> Event:
        """Turn a raw incident into an Event (names, fingerprint, task name)."""
        codes, index = raw.codes, raw.culprit
        if len(codes) > self._max_frames:
            # The walk to the culprit is not bounded by max_frames: keep the culprit
            # and the frames it called, dropping the innermost ones.
            start = max(0, index - self._max_frames + 1)
            codes = codes[start : start + self._max_frames]
            index = index - start if index >= 0 else -1
        frames = tuple(self._frame(code, line) for code, line in reversed(codes))
        culprit = frames[len(frames) - 1 - index] if index >= 0 else None
        key_code = codes[index][0] if index >= 0 else None
        fingerprint = self._fingerprint(raw.operation, key_code, culprit)
        task_name = None
        if raw.task is not None:
            try:
                task_name = raw.task.get_name()
            except Exception:
                task_name = None
        return Event(
            kind="call",
            operation=raw.operation,
            started_at=raw.started_at,
            duration=raw.duration,
            frames=frames,
            culprit=culprit,
            fingerprint=fingerprint,
            thread_id=raw.thread_id,
            thread_name=raw.thread_name,
            task=task_name,
            detectors=(raw.detector,),
            request=raw.request,
            detail=_detail_text(raw.detail),
            quiet=raw.quiet,
            suppressed=raw.suppressed,
            pid=self._pid,
            module_globals=raw.globals,
            parent=getattr(raw, "span", None),
        )


def _detail_text(detail: object) -> str | None:
    if detail is None:
        return None
    if isinstance(detail, tuple):  # (redactor, argument): redacted here, not on the loop
        redactor, argument = detail
        text = redactor(argument)
        return text if isinstance(text, str) else None
    return str(detail)
