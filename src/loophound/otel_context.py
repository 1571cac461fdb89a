"""The active OpenTelemetry span's ids, for the request context of incidents.

Loaded by name from ``loophound.asgi`` only when ``opentelemetry-api`` is installed,
so that neither the core nor the middleware imports OpenTelemetry.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace

from loophound._events import RequestRecord

__all__ = ["current_span_ids", "describe_request", "recording_span"]

_get_current_span = trace.get_current_span
_get_current_context = otel_context.get_current


def current_span_ids() -> tuple[str, str] | None:
    """Return ``(trace_id, span_id)`` in W3C hex of the active span, if one is recording."""
    current = _get_current_context()
    if not current:  # no span, no baggage: the common case without instrumentation
        return None
    context = _get_current_span(current).get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def recording_span() -> trace.Span | None:
    """Return the active span if it records (the request's server span, when outside)."""
    span = _get_current_span()
    return span if span.is_recording() else None


def describe_request(span: object, record: RequestRecord) -> None:
    """Put a request's thread hops on its span, if it is still recording."""
    if isinstance(span, trace.Span) and span.is_recording():
        span.set_attributes(
            {
                "loophound.thread_hops.count": record.hops,
                "loophound.thread_hops.wait": record.hop_wait,
                "loophound.thread_hops.run": record.hop_run,
            }
        )
