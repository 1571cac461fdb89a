"""One JSON object per event, appended to a file that several processes may share.

Schema (version 1) is documented in the README. The file is opened for append and
each event is a single ``write()`` of one line, so lines from several workers never
interleave and an existing log is never truncated.
"""

from __future__ import annotations

import json
import os
from typing import Any

from loophound._events import Event, Frame, RequestRecord

__all__ = ["SCHEMA_VERSION", "JsonlSink", "event_record", "request_record"]

SCHEMA_VERSION = 1


def _frame(frame: Frame) -> dict[str, Any]:
    return {"file": frame.filename, "line": frame.lineno, "function": frame.function}


def event_record(event: Event) -> dict[str, Any]:
    """Return the JSON-ready record of an event (schema ``SCHEMA_VERSION``)."""
    return {
        "schema": SCHEMA_VERSION,
        "kind": event.kind,
        "operation": event.operation,
        "detail": event.detail,
        "started_at": event.started_at,
        "duration": event.duration,
        "culprit": None if event.culprit is None else _frame(event.culprit),
        "frames": [_frame(f) for f in event.frames],
        "fingerprint": event.fingerprint,
        "thread": {"id": event.thread_id, "name": event.thread_name},
        "task": event.task,
        "detectors": list(event.detectors),
        "request": None if event.request is None else dict(event.request),
        "quiet": event.quiet,
        "suppressed": event.suppressed,
        "pid": event.pid,
        "primitives": list(event.primitives),
        "samples": None if event.samples is None else dict(event.samples),
        "loop_cpu": event.loop_cpu,
        "victims": list(event.victims),
    }


def request_record(record: RequestRecord) -> dict[str, Any]:
    """Return the JSON-ready record of a served request (``kind`` is ``request``)."""
    return {
        "schema": SCHEMA_VERSION,
        "kind": "request",
        "request": dict(record.request),
        "started_at": record.started_at,
        "duration": record.duration,
        "thread_hops": {"count": record.hops, "wait": record.hop_wait, "run": record.hop_run},
        "pid": record.pid,
    }


class JsonlSink:
    """Appends ``event_record(event)`` as one line per event to ``path``."""

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        # O_APPEND: every write lands at the end, whoever else appends to the file.
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def deliver(self, event: Event) -> None:
        """Write the event as one line."""
        self._write(event_record(event))

    def deliver_request(self, record: RequestRecord) -> None:
        """Write a served request and its thread hops as one line."""
        self._write(request_record(record))

    def _write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            return
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        data = (line + "\n").encode("utf-8", "surrogateescape")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
