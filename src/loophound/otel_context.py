"""The active OpenTelemetry span's ids, for the request context of incidents.

Loaded by name from ``loophound.asgi`` only when ``opentelemetry-api`` is installed,
so that neither the core nor the middleware imports OpenTelemetry.
"""

from __future__ import annotations

from opentelemetry import trace

__all__ = ["current_span_ids"]

_get_current_span = trace.get_current_span


def current_span_ids() -> tuple[str, str] | None:
    """Return ``(trace_id, span_id)`` in W3C hex of the active span, if one is recording."""
    context = _get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
