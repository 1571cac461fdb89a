"""A bare ASGI app behind LoophoundMiddleware whose sinks fail on demand (served by uvicorn).

Three of loophound's outputs are wired to one switchboard, ``FAULTS``: a sink added to
the guard at lifespan startup (``faulty``), the ``on_event`` callback (``callback``)
and the span exporter of the ``tracer_provider`` given to the middleware (``otel``).
Each one, on every call, does what its switch says: ``ok``, ``raise``, ``hang`` (wait
for ``/release/``, 60 s at most) or ``slow`` (0.1 s). The JSON-lines sink comes from
``LOOPHOUND_JSONL``; ``FAULTY_APP_FILE_LIMIT=0`` makes every write to it fail for real
(the process's file size limit, as a full disk or a quota would; run the server with
its output on a pipe or /dev/null, which the limit does not cover).

Routes: ``/clean/`` (awaits, never an incident), ``/blocking/`` (``time.sleep`` on the
loop), ``/fault/?target=T&kind=K``, ``/release/``, ``/flush/`` and ``/state/`` (the
guard's counters, the calls and busy intervals of each output, the ERROR records of
the ``loophound`` logger, and when each clean request finished).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from loophound import Event
from loophound.asgi import LoophoundMiddleware

TARGETS = ("faulty", "callback", "otel")
KINDS = ("ok", "raise", "hang", "slow")
#: Upper bound of a hang: the switchboard never holds loophound's thread longer.
HANG_BOUND = 60.0
SLOW = 0.1
#: Small, so that a hanging output makes the dispatcher's queue overflow quickly.
QUEUE_SIZE = 16


class Switchboard:
    """What each output does when called, and what happened (read by ``/state/``)."""

    def __init__(self, kind: str) -> None:
        self.lock = threading.Lock()
        self.kinds = dict.fromkeys(TARGETS, kind)
        self.calls = dict.fromkeys(TARGETS, 0)
        self.release = threading.Event()
        #: [target, kind, start ns, end ns or None] per slow or hanging call (monotonic).
        self.busy: list[list[Any]] = []
        self.clean_done: list[int] = []

    def act(self, target: str) -> None:
        """Called by an output on loophound's dispatcher thread."""
        with self.lock:
            self.calls[target] += 1
            kind = self.kinds[target]
        if kind == "raise":
            raise RuntimeError(f"{target} fault injected by the test")
        if kind in ("hang", "slow"):
            interval = [target, kind, time.monotonic_ns(), None]
            with self.lock:
                self.busy.append(interval)
            if kind == "hang":
                self.release.wait(HANG_BOUND)
            else:
                threading.Event().wait(SLOW)
            interval[3] = time.monotonic_ns()


FAULTS = Switchboard(os.environ.get("FAULTY_APP_KIND", "ok"))

if "FAULTY_APP_FILE_LIMIT" in os.environ:
    # Writes past the limit fail with EFBIG instead of killing the process with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(os.environ["FAULTY_APP_FILE_LIMIT"]), hard))


class FaultySink:
    """A sink of the test's own, added with ``guard.add_sink``."""

    name = "faulty"

    def deliver(self, _event: Event) -> None:
        """Do what the switchboard says."""
        FAULTS.act("faulty")

    def close(self) -> None:
        """Nothing to release."""


class FaultyExporter(SpanExporter):
    """An OpenTelemetry span exporter that fails as the switchboard says."""

    def export(self, _spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Do what the switchboard says, then report success."""
        FAULTS.act("otel")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


class ErrorRecords(logging.Handler):
    """Keeps the messages of the ERROR records of the ``loophound`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


ERRORS = ErrorRecords()
logging.getLogger("loophound").addHandler(ERRORS)

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FaultyExporter()))
_sink = FaultySink()
_sink_added = False


def _add_sink() -> None:
    global _sink_added
    guard = application.guard
    if not _sink_added and guard is not None:
        guard.add_sink(_sink)
        _sink_added = True


async def _respond(send: Any, body: object) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _state() -> dict[str, Any]:
    guard = application.guard
    with FAULTS.lock:
        return {
            "stats": guard.stats.as_dict() if guard is not None else {},
            "calls": dict(FAULTS.calls),
            "kinds": dict(FAULTS.kinds),
            "busy": [list(interval) for interval in FAULTS.busy],
            "errors": list(ERRORS.messages),
            "clean_done": list(FAULTS.clean_done),
            "now": time.monotonic_ns(),
        }


def block() -> None:
    """Block the loop briefly, always from this one line."""
    time.sleep(0.005)  # the blocking line


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Serve the routes of the module docstring."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _add_sink()  # the middleware installed the guard as this message came in
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    _add_sink()
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    if path == "/clean/":
        await asyncio.sleep(0.001)
        FAULTS.clean_done.append(time.monotonic_ns())
        await _respond(send, {"clean": True})
    elif path == "/blocking/":
        block()
        await _respond(send, {"blocked": True})
    elif path == "/fault/":
        target, kind = query["target"][0], query["kind"][0]
        if target not in TARGETS or kind not in KINDS:
            raise ValueError(f"bad fault {target}={kind}")
        with FAULTS.lock:
            if kind == "hang":
                FAULTS.release.clear()
            FAULTS.kinds[target] = kind
        await _respond(send, _state())
    elif path == "/release/":
        with FAULTS.lock:
            for target in TARGETS:
                FAULTS.kinds[target] = "ok"
        FAULTS.release.set()
        await _respond(send, _state())
    elif path == "/flush/":
        guard = application.guard
        flushed = guard is not None and await asyncio.to_thread(guard.flush, 20.0)
        await _respond(send, {"flushed": flushed, **_state()})
    elif path == "/state/":
        await _respond(send, _state())
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


application = LoophoundMiddleware(
    app,
    on_event=lambda _event: FAULTS.act("callback"),
    tracer_provider=provider,
    imports="ignore",
    rate_limit=10_000_000,
    queue_size=QUEUE_SIZE,
)
