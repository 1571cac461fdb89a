"""OpenTelemetry: one span per incident under the request's span, and metrics.

Uses ``opentelemetry-api`` only, with the providers given (``tracer_provider=``,
``meter_provider=``) or the global ones; it never configures the SDK. Loaded by name
by the guard when the ``otel`` sink is chosen, so the core never imports it.

Spans are made on the dispatcher thread, after the fact, with the incident's real
start and end: a stall found by the watchdog still covers the interval the loop stood
still. Their parent is the span that was active where the incident happened (read on
the loop thread, or from the stalled task's context), so it nests under the request's
span whichever way the OpenTelemetry and loophound middlewares are stacked; with no
span active it is a root span. The other requests that were in flight during a stall
(its victims) get a ``loophound.delayed`` span event, and a link where the SDK allows
adding one, pointing at the incident's span.

Volume is bounded by the guard's rate cap per call site; the metrics count what the
cap suppressed too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind

from loophound._context import request_holders, set_span_reader, set_stall_listener
from loophound._events import Event
from loophound._frames import relative_to_import_root
from loophound._recorder import Stats
from loophound._version import __version__
from loophound.detectors.watchdog import LoopDelays

__all__ = ["METRICS", "STACKTRACE_LIMIT", "OtelSink", "span_context_now"]

#: ``code.stacktrace`` stays under this many bytes; the innermost frames are kept.
STACKTRACE_LIMIT = 2000
#: Distinct culprit labels per process; the rest are counted as ``other``.
CULPRIT_LABELS = 200
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DELAY_BUCKETS = LoopDelays.BOUNDS
_SPAN_NAMES = {"stall": "loop stall", "slow_callback": "slow callback"}

#: Every instrument: name, kind, unit, description (the README's metrics table).
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("loophound.blocking.incidents", "counter", "{incident}", "Incidents that blocked the loop"),
    ("loophound.blocking.duration", "histogram", "s", "How long each incident held the loop"),
    ("loophound.loop.delay", "histogram", "s", "Lateness of every watchdog heartbeat"),
    ("loophound.stall.victims", "histogram", "{request}", "Other requests waiting per stall"),
    ("loophound.events.dropped", "observable_counter", "{event}", "Incidents dropped"),
    ("loophound.sink.failures", "observable_counter", "{failure}", "Sinks that raised"),
)

_DESCRIBED = {name: (unit, text) for name, _, unit, text in METRICS}
_VICTIM_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100)
_get_current_span = trace.get_current_span
#: Fingerprints whose counter labels are kept for suppressed calls.
_LABEL_SETS = 10_000
#: A stall's start as the watchdog saw it and as the incident says may differ a little.
_SLACK_NS = 50_000_000


def span_context_now() -> SpanContext | None:
    """Return the active span's context, if valid (the guard's span reader)."""
    span_context = _get_current_span().get_span_context()
    return span_context if span_context.is_valid else None


def _histogram(meter: metrics.Meter, name: str, buckets: Iterable[float]) -> Any:
    unit, text = _DESCRIBED[name]
    try:
        return meter.create_histogram(
            name, unit=unit, description=text, explicit_bucket_boundaries_advisory=list(buckets)
        )
    except TypeError:  # an API older than 1.23: the SDK's default buckets
        return meter.create_histogram(name, unit=unit, description=text)


def _observable(meter: metrics.Meter, name: str, read: Callable[[], int]) -> None:
    unit, text = _DESCRIBED[name]
    meter.create_observable_counter(
        name,
        callbacks=[lambda _options: [metrics.Observation(read())]],
        unit=unit,
        description=text,
    )


_HEADER = "Traceback (most recent call last):\n"
_ELLIPSIS = "  ...\n"
#: Bytes the frame lines may take: the header and the "..." line must fit as well.
_FRAMES_BUDGET = STACKTRACE_LIMIT - 1 - len(_HEADER) - len(_ELLIPSIS)


def _stacktrace(event: Event) -> str:
    """Return the stack as a traceback text under STACKTRACE_LIMIT, innermost kept."""
    lines: list[str] = []
    size = 0
    for frame in reversed(event.frames):
        line = f'  File "{frame.filename}", line {frame.lineno}, in {frame.function}\n'
        size += len(line.encode("utf-8", "replace"))
        if size > _FRAMES_BUDGET:
            lines.append(_ELLIPSIS)
            break
        lines.append(line)
    return _HEADER + "".join(reversed(lines))


class OtelSink:
    """Incident spans, victim links and metrics through ``opentelemetry-api``."""

    name = "otel"

    def __init__(
        self,
        stats: Stats,
        delays: LoopDelays,
        tracer_provider: object | None = None,
        meter_provider: object | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(
            "loophound",
            __version__,
            tracer_provider=tracer_provider,  # type: ignore[arg-type]
        )
        meter = metrics.get_meter(
            "loophound",
            __version__,
            meter_provider=meter_provider,  # type: ignore[arg-type]
        )
        unit, text = _DESCRIBED["loophound.blocking.incidents"]
        self._incidents = meter.create_counter(
            "loophound.blocking.incidents", unit=unit, description=text
        )
        self._duration = _histogram(meter, "loophound.blocking.duration", _DURATION_BUCKETS)
        self._delay = _histogram(meter, "loophound.loop.delay", _DELAY_BUCKETS)
        self._victims = _histogram(meter, "loophound.stall.victims", _VICTIM_BUCKETS)
        _observable(meter, "loophound.events.dropped", lambda: stats.dropped)
        _observable(meter, "loophound.sink.failures", lambda: stats.sink_failures)
        self._culprits: dict[str, str] = {}
        #: Counter labels per fingerprint, for calls the rate cap suppressed.
        self._labels: dict[str, dict[str, str]] = {}
        #: Spans of stalls started as they began (they had victims), by loop thread.
        self._open: dict[int, list[tuple[int, trace.Span]]] = {}
        self._open_lock = threading.Lock()
        self._delays = delays
        delays.observers = (*delays.observers, self._observe_delay)
        set_span_reader(span_context_now)
        set_stall_listener(self.stall_began)

    # -- metrics -------------------------------------------------------------------------

    def _observe_delay(self, seconds: float, _loop_id: int) -> None:
        # On the loop thread, at every heartbeat: one in-memory histogram update.
        self._delay.record(seconds)

    def _culprit_label(self, event: Event) -> str:
        if event.culprit is None:
            return "unknown"
        where = f"{event.culprit.filename}:{event.culprit.lineno}"
        label = self._culprits.get(where)
        if label is None:
            if len(self._culprits) >= CULPRIT_LABELS:
                return "other"
            label = f"{relative_to_import_root(event.culprit.filename)}:{event.culprit.lineno}"
            self._culprits[where] = label
        return label

    def _count(self, event: Event) -> None:
        route = (event.request or {}).get("route") or "none"
        labels = {
            "loophound.kind": event.kind,
            "loophound.operation": event.operation,
            "http.route": route,
            "loophound.culprit": self._culprit_label(event),
        }
        self._incidents.add(1 + event.suppressed, labels)
        if event.fingerprint not in self._labels and len(self._labels) < _LABEL_SETS:
            self._labels[event.fingerprint] = labels
        if event.duration is not None:
            self._duration.record(event.duration, labels)
        if "watchdog" in event.detectors:  # the loop stalled: who waited for it
            self._victims.record(len(event.victims))

    def deliver_suppressed(self, fingerprint: str, count: int) -> None:
        """Count calls the rate cap suppressed, with their call site's labels."""
        labels = self._labels.get(fingerprint)
        if labels is not None:
            self._incidents.add(count, labels)

    # -- spans ---------------------------------------------------------------------------

    def stall_began(
        self, thread_id: int, started_ns: int, victims: tuple[str, ...], parent: object
    ) -> None:
        """On the watchdog thread, as a stall with victims begins: open its span now.

        The loop is stuck, so no victim can finish before its span is told; the span
        is named, described and ended when the incident is delivered.
        """
        spans = self._victim_spans(victims)
        if not spans:
            return
        span = self._start("loop stall", parent, started_ns, {"loophound.kind": "stall"}, spans)
        incident = span.get_span_context()
        for victim in spans:
            self._tell_victim(victim, incident, started_ns, {"loophound.kind": "stall"})
        with self._open_lock:
            self._open.setdefault(thread_id, []).append((started_ns, span))

    def _started_for(self, event: Event) -> trace.Span | None:
        """Return the span opened as this incident's stall began, if there was one."""
        if "watchdog" not in event.detectors:
            return None
        end = event.started_at + round((event.duration or 0.0) * 1e9)
        with self._open_lock:
            opened = self._open.get(event.thread_id)
            if not opened:
                return None
            for index, (started, span) in enumerate(opened):
                if event.started_at - _SLACK_NS <= started <= end:
                    del opened[index]
                    return span
            # Stalls older than this one whose incident never came (rate cap, allowed).
            stale = [(s, span) for s, span in opened if s < event.started_at - _SLACK_NS]
            opened[:] = [(s, span) for s, span in opened if s >= event.started_at - _SLACK_NS]
        for _, span in stale:
            span.end()
        return None

    def _start(
        self,
        name: str,
        parent: object,
        start: int,
        attributes: dict[str, Any],
        victims: list[trace.Span],
    ) -> trace.Span:
        if isinstance(parent, SpanContext) and parent.is_valid:
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        else:
            context = otel_context.Context()  # a root span: no request span was active
        links = [
            Link(span.get_span_context(), {"loophound.relation": "delayed"}) for span in victims
        ]
        return self._tracer.start_span(
            name,
            context=context,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            start_time=start,
        )

    def deliver(self, event: Event) -> None:
        """Count the incident and, unless it is quiet (a module load), trace it."""
        self._count(event)
        if event.quiet:
            return
        name = _SPAN_NAMES.get(event.kind, f"blocking {event.operation}")
        attributes = self._attributes(event)
        end = event.started_at + round((event.duration or 0.0) * 1e9)
        span = self._started_for(event)
        if span is not None:  # opened as the stall began; its victims were told then
            span.update_name(name)
            span.set_attributes(attributes)
            span.end(end_time=end)
            return
        victims = self._victim_spans(event.victims)
        span = self._start(name, event.parent, event.started_at, attributes, victims)
        span.end(end_time=end)
        incident = span.get_span_context()
        told = _told(event)
        for victim in victims:
            self._tell_victim(victim, incident, event.started_at, told)

    def _attributes(self, event: Event) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "loophound.kind": event.kind,
            "loophound.operation": event.operation,
            "loophound.detectors": list(event.detectors),
            "loophound.fingerprint": event.fingerprint,
            "thread.id": event.thread_id,
            "thread.name": event.thread_name,
        }
        if event.duration is not None:
            attributes["loophound.duration"] = event.duration
        if event.detail:
            attributes["loophound.detail"] = event.detail
        if event.task:
            attributes["loophound.task"] = event.task
        if event.culprit is not None:
            attributes["code.function.name"] = event.culprit.function
            attributes["code.file.path"] = event.culprit.filename
            attributes["code.line.number"] = event.culprit.lineno
        if event.frames:
            attributes["code.stacktrace"] = _stacktrace(event)
        if event.primitives:
            attributes["loophound.primitives"] = list(event.primitives)
        if event.loop_cpu is not None:
            attributes["loophound.loop_cpu"] = event.loop_cpu
        if event.suppressed:
            attributes["loophound.suppressed"] = event.suppressed
        request = event.request or {}
        for key, name in (("route", "http.route"), ("method", "http.request.method")):
            if request.get(key):
                attributes[name] = request[key]
        if request.get("id"):
            attributes["loophound.request.id"] = request["id"]
        if event.victims:
            attributes["loophound.victims.count"] = len(event.victims)
            attributes["loophound.victims"] = list(event.victims[:50])
        return attributes

    def _victim_spans(self, victims: Iterable[str]) -> list[trace.Span]:
        spans: list[trace.Span] = []
        for request_id in victims:
            holder = request_holders.get(request_id)
            span = _span_of(holder)
            if span is not None and span.is_recording():
                spans.append(span)
        return spans

    def _tell_victim(
        self, victim: trace.Span, incident: SpanContext, when: int, about: dict[str, Any]
    ) -> None:
        attributes: dict[str, Any] = {
            "loophound.incident.trace_id": format(incident.trace_id, "032x"),
            "loophound.incident.span_id": format(incident.span_id, "016x"),
            **about,
        }
        victim.add_event("loophound.delayed", attributes, timestamp=when)
        add_link = getattr(victim, "add_link", None)  # SDK 1.23+
        if add_link is not None:
            add_link(incident, {"loophound.relation": "delayed_by"})

    def close(self) -> None:
        """Stop reading spans and heartbeats, end open spans; flushing is the SDK's job."""
        set_span_reader(None)
        set_stall_listener(None)
        with self._open_lock:
            opened = [span for spans in self._open.values() for _, span in spans]
            self._open.clear()
        for span in opened:
            span.end()
        observers = self._delays.observers
        self._delays.observers = tuple(o for o in observers if o != self._observe_delay)


def _told(event: Event) -> dict[str, Any]:
    """Return what a victim's span event says about the incident that delayed it."""
    about: dict[str, Any] = {"loophound.kind": event.kind, "loophound.operation": event.operation}
    if event.duration is not None:
        about["loophound.duration"] = event.duration
    if event.culprit is not None:
        about["code.file.path"] = event.culprit.filename
        about["code.line.number"] = event.culprit.lineno
    route = (event.request or {}).get("route")
    if route:
        about["loophound.culprit.route"] = route
    return about


def _span_of(holder: object) -> trace.Span | None:
    """Return the span a request holder names: its span, or its task's active span."""
    if isinstance(holder, trace.Span):
        return holder
    if isinstance(holder, asyncio.Task):
        get_context = getattr(holder, "get_context", None)  # 3.12+; 3.11 keeps it private
        task_context = get_context() if get_context else getattr(holder, "_context", None)
        if task_context is not None:
            try:
                span: trace.Span = task_context.copy().run(_get_current_span)
            except Exception:
                return None
            return span
    return None
