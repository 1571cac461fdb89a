"""The application, wrapped as the variant in ``LOAD_VARIANT`` asks (bench/load/run.py).

- ``baseline``: Django alone; also ``asyncio-debug`` (the runner sets
  ``PYTHONASYNCIODEBUG=1``).
- ``loophound``: ``LoophoundMiddleware`` with every detector and its default sinks
  (warnings, logging: silent on a clean app).
- ``otel``: OpenTelemetry's ASGI middleware, an SDK ``TracerProvider`` with a
  ``BatchSpanProcessor`` to an exporter that drops the spans, and a ``MeterProvider``
  whose reader aggregates and is never collected: the SDK's work without the network.
- ``otel+loophound``: the same, with loophound's middleware inside and its ``otel``
  sink on (as ``loophound demo --otel`` stacks them).
- ``blockbuster``: ``BlockBuster().activate()`` for the whole process.
- ``aiodebug``: ``aiodebug.log_slow_callbacks.enable(0.1)``.
- ``pyleak``: ``no_event_loop_blocking(action="log", threshold=0.1)`` entered at the
  first request and left open for the process's life.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from django.core.asgi import get_asgi_application
from django.template.loader import get_template

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loadsite.settings")

VARIANTS = (
    "baseline",
    "loophound",
    "otel",
    "otel+loophound",
    "blockbuster",
    "aiodebug",
    "pyleak",
    "asyncio-debug",
)
VARIANT = os.environ.get("LOAD_VARIANT", "baseline")
if VARIANT not in VARIANTS:
    raise SystemExit(f"LOAD_VARIANT={VARIANT!r}: one of {', '.join(VARIANTS)}")
THRESHOLD = 0.1

django_application = get_asgi_application()
from loadsite import views  # noqa: E402 - the app registry is ready now

# Compiled and rendered now, before the loop runs: the cached loader then serves it, and
# the first number's locale lookup (a stat of format files, cached) is done.
get_template(views.TEMPLATE).render(views.CONTEXT)

application: Any = django_application
_exported = [0]
_pyleak: list[Any] = []


def tracer_provider() -> object:
    from opentelemetry import trace

    return trace.get_tracer_provider()


def spans_exported() -> int:
    return _exported[0]


def pyleak_monitoring() -> bool:
    return bool(_pyleak) and bool(_pyleak[0].detector.monitoring)


def _configure_otel() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class DropSpans(SpanExporter):
        """Counts the spans it is handed and drops them: no serialisation, no network."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            _exported[0] += len(spans)
            return SpanExportResult.SUCCESS

    resource = Resource.create({"service.name": "loophound-load-bench"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    trace.set_tracer_provider(provider)
    # Aggregates every measurement; nobody ever collects it.
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[InMemoryMetricReader()])
    )


ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def _with_pyleak(app: ASGIApp) -> ASGIApp:
    from pyleak import no_event_loop_blocking

    lock = asyncio.Lock()

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if not _pyleak:
            async with lock:
                if not _pyleak:
                    monitor = no_event_loop_blocking(action="log", threshold=THRESHOLD)
                    await monitor.__aenter__()  # left open: the monitor thread runs on
                    _pyleak.append(monitor)
        await app(scope, receive, send)

    return wrapped


#: Extra middleware settings, for profiling one part at a time (JSON object), e.g.
#: ``LOAD_LOOPHOUND='{"detectors": ["callbacks"]}'``; the benchmark never sets it.
LOOPHOUND_EXTRA = json.loads(os.environ.get("LOAD_LOOPHOUND", "{}"))

if VARIANT == "loophound":
    from loophound.asgi import LoophoundMiddleware

    application = LoophoundMiddleware(django_application, threshold=THRESHOLD, **LOOPHOUND_EXTRA)
elif VARIANT == "otel":
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    _configure_otel()
    application = OpenTelemetryMiddleware(django_application)
elif VARIANT == "otel+loophound":
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from loophound.asgi import LoophoundMiddleware

    _configure_otel()
    settings = {"threshold": THRESHOLD, "sinks": ("warnings", "logging", "otel")}
    application = OpenTelemetryMiddleware(
        LoophoundMiddleware(django_application, **{**settings, **LOOPHOUND_EXTRA})
    )
elif VARIANT == "blockbuster":
    from blockbuster import BlockBuster

    BlockBuster().activate()
elif VARIANT == "aiodebug":
    from aiodebug import log_slow_callbacks

    log_slow_callbacks.enable(THRESHOLD)
elif VARIANT == "pyleak":
    application = _with_pyleak(django_application)
