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
from collections.abc import Callable
from types import CodeType
from typing import Protocol

from loophound._events import Event, Frame, fingerprint_of
from loophound._frames import relative_to_import_root
from loophound._recorder import RawIncident, Stats

__all__ = ["Dispatcher", "Sink"]

logger = logging.getLogger("loophound")


class Sink(Protocol):
    """Receives every Event on the dispatcher thread."""

    name: str

    def deliver(self, event: Event) -> None:
        """Take one event; may raise (the sink is then disabled) or be slow."""

    def close(self) -> None:
        """Release what the sink holds (files); called once at uninstall."""


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class Dispatcher:
    """Owns the queue, the thread and the sinks of one guard."""

    def __init__(
        self, sinks: list[Sink], stats: Stats, queue_size: int, max_frames: int = 1000
    ) -> None:
        self._sinks: tuple[Sink, ...] = tuple(sinks)
        self._max_frames = max_frames
        self._stats = stats
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._limit = queue_size
        self._frames: dict[tuple[CodeType, int], Frame] = {}
        self._fingerprints: dict[tuple[str, CodeType | None, int], str] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.on_event_hooks: tuple[Callable[[Event], None], ...] = ()

    def start(self) -> None:
        """Start the daemon thread (it never keeps the process alive)."""
        self._thread = threading.Thread(target=self._run, name="loophound-dispatcher", daemon=True)
        self._thread.start()

    def submit(self, raw: RawIncident) -> None:
        """Queue a raw incident from the loop thread; drop and count when full."""
        q = self._queue
        if q.qsize() >= self._limit:
            self._stats.dropped += 1
            return
        q.put(raw)

    def add_sink(self, sink: Sink) -> None:
        """Add a sink (copy on write: the dispatcher thread reads a tuple)."""
        self._sinks = (*self._sinks, sink)

    def remove_sink(self, sink: Sink) -> None:
        """Remove a sink added with ``add_sink``."""
        self._sinks = tuple(s for s in self._sinks if s is not sink)

    def flush(self, timeout: float) -> bool:
        """Wait until every incident queued before this call was delivered."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def stop(self, timeout: float) -> None:
        """Deliver what is queued (up to ``timeout``), stop the thread, close sinks."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("loophound: closing sink %r failed", sink.name)
        self._thread = None

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            if isinstance(item, _Flush):
                item.done.set()
                continue
            try:
                event = self.build(item)  # type: ignore[arg-type]
            except Exception:
                logger.exception("loophound: building an event failed; it was dropped")
                continue
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        self._stats.dispatched += 1
        for sink in self._sinks:
            try:
                sink.deliver(event)
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
        key = (raw.operation, key_code, culprit.lineno if culprit else 0)
        fingerprint = self._fingerprints.get(key)
        if fingerprint is None:
            rel = relative_to_import_root(culprit.filename) if culprit else ""
            fingerprint = fingerprint_of(raw.operation, culprit, rel)
            if len(self._fingerprints) < 100_000:
                self._fingerprints[key] = fingerprint
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
        )


def _detail_text(detail: object) -> str | None:
    if detail is None:
        return None
    if isinstance(detail, tuple):  # (redactor, argument): redacted here, not on the loop
        redactor, argument = detail
        text = redactor(argument)
        return text if isinstance(text, str) else None
    return str(detail)
