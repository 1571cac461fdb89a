"""OpenTelemetry for the demo, from the SDK's standard environment variables.

``OTEL_TRACES_EXPORTER`` (``console`` or ``otlp``) and ``OTEL_METRICS_EXPORTER``
(``console``, ``otlp`` or ``prometheus``, served on ``OTEL_EXPORTER_PROMETHEUS_HOST``
and ``OTEL_EXPORTER_PROMETHEUS_PORT``, default 127.0.0.1:9464). The service name and
resource attributes come from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``.
This is the demo's own set-up, what an application does: loophound itself never
configures the SDK. ``loophound demo --otel ...`` sets the variables.
"""

from __future__ import annotations

import os
from typing import Any

from loophound.exceptions import ConfigurationError

__all__ = ["configure", "wanted"]

TRACES = ("console", "otlp", "none")
METRICS = ("console", "otlp", "prometheus", "none")


def _choice(key: str, valid: tuple[str, ...]) -> str:
    value = os.environ.get(key, "none").strip().lower() or "none"
    if value not in valid:
        raise ConfigurationError(
            f"loophound demo: invalid value for {key}: {value!r}; valid values: " + ", ".join(valid)
        )
    return value


def wanted() -> bool:
    """True when the environment asks for traces or metrics."""
    return _choice("OTEL_TRACES_EXPORTER", TRACES) != "none" or (
        _choice("OTEL_METRICS_EXPORTER", METRICS) != "none"
    )


def configure() -> None:
    """Set the global tracer and meter providers the environment asks for."""
    from opentelemetry import metrics, trace  # noqa: PLC0415 - only when asked for
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "demo")})
    traces = _choice("OTEL_TRACES_EXPORTER", TRACES)
    if traces != "none":
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(_span_processor(traces))
        trace.set_tracer_provider(provider)
    kind = _choice("OTEL_METRICS_EXPORTER", METRICS)
    if kind != "none":
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[_reader(kind)]))


def _span_processor(kind: str) -> Any:
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    if kind == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return BatchSpanProcessor(OTLPSpanExporter())


def _reader(kind: str) -> Any:
    if kind == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
        from prometheus_client import start_http_server  # noqa: PLC0415

        host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
        port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
        start_http_server(port, addr=host)
        return PrometheusMetricReader()
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    # The SDK's default is a minute; a demo wants to show something sooner.
    interval = int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "5000"))
    if kind == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter(), interval)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter,
    )

    return PeriodicExportingMetricReader(OTLPMetricExporter(), interval)
