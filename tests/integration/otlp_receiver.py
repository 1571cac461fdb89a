"""A tiny OTLP/HTTP receiver on 127.0.0.1: decodes what exporters POST, keeps it in memory.

Accepts ``POST /v1/traces`` and ``POST /v1/metrics`` (protobuf, optionally gzip), and
answers each with an empty export response. The spans and metrics it decoded are kept
as plain records for the tests to read, from any thread.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["ReceivedSpan", "Receiver", "otlp_receiver"]

HOST = "127.0.0.1"
#: Upper bound of a wait for something to arrive.
ARRIVAL_BOUND = 15.0


def value_of(value: AnyValue) -> Any:
    """Return the Python value of an OTLP ``AnyValue`` (arrays become tuples)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    if kind is None:
        return None
    return getattr(value, kind)


def attributes_of(pairs: Any) -> dict[str, Any]:
    """Return OTLP key-value pairs as a dict."""
    return {pair.key: value_of(pair.value) for pair in pairs}


@dataclass(frozen=True)
class ReceivedEvent:
    """A span event as received."""

    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedLink:
    """A span link as received (ids in lower-case hex)."""

    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as received: ids in lower-case hex, times in ns, kind as the OTLP number."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start: int
    end: int
    status_code: int
    attributes: dict[str, Any]
    events: tuple[ReceivedEvent, ...]
    links: tuple[ReceivedLink, ...]
    scope: str
    resource: dict[str, Any]


@dataclass
class Receiver:
    """What the receiver got so far, and where it listens."""

    port: int = 0
    spans: list[ReceivedSpan] = field(default_factory=list)
    #: Metric name -> the OTLP ``Metric`` messages received with that name.
    metrics: dict[str, list[Any]] = field(default_factory=dict)
    posts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        """The base URL an exporter's ``OTEL_EXPORTER_OTLP_ENDPOINT`` should name."""
        return f"http://{HOST}:{self.port}"

    def snapshot(self) -> list[ReceivedSpan]:
        """Return the spans received so far."""
        with self.lock:
            return list(self.spans)

    def metric(self, name: str) -> list[Any]:
        """Return the ``Metric`` messages received so far under ``name``."""
        with self.lock:
            return list(self.metrics.get(name, ()))

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], bound: float = ARRIVAL_BOUND
    ) -> list[ReceivedSpan]:
        """Return the spans once ``predicate(spans)`` holds, or after ``bound`` seconds."""
        deadline = time.monotonic() + bound
        spans = self.snapshot()
        while not predicate(spans) and time.monotonic() < deadline:
            time.sleep(0.05)
            spans = self.snapshot()
        return spans

    def wait_for_metric(
        self,
        name: str,
        predicate: Callable[[list[Any]], bool] = bool,
        bound: float = ARRIVAL_BOUND,
    ) -> list[Any]:
        """Return the ``Metric`` messages named ``name`` once ``predicate`` holds on them.

        Gives up after ``bound`` seconds and returns what came.
        """
        deadline = time.monotonic() + bound
        found = self.metric(name)
        while not predicate(found) and time.monotonic() < deadline:
            time.sleep(0.05)
            found = self.metric(name)
        return found

    def _take_traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = [
            _span(span, scope_spans.scope.name, attributes_of(resource_spans.resource.attributes))
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self.lock:
            self.spans.extend(received)

    def _take_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        self.metrics.setdefault(metric.name, []).append(metric)


def _span(span: Any, scope: str, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        kind=span.kind,
        start=span.start_time_unix_nano,
        end=span.end_time_unix_nano,
        status_code=span.status.code,
        attributes=attributes_of(span.attributes),
        events=tuple(ReceivedEvent(e.name, attributes_of(e.attributes)) for e in span.events),
        links=tuple(
            ReceivedLink(link.trace_id.hex(), link.span_id.hex(), attributes_of(link.attributes))
            for link in span.links
        ),
        scope=scope,
        resource=resource,
    )


_RESPONSES = {
    "/v1/traces": ExportTraceServiceResponse,
    "/v1/metrics": ExportMetricsServiceResponse,
}


def _handler(receiver: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    takers = {"/v1/traces": receiver._take_traces, "/v1/metrics": receiver._take_metrics}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporters expect

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            take = takers.get(path)
            if take is None:
                self._answer(404, b"")
                return
            try:
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                take(body)
            except (DecodeError, OSError, EOFError) as exc:
                with receiver.lock:
                    receiver.errors.append(f"{path}: {exc!r}")
                self._answer(400, b"")
                return
            with receiver.lock:
                receiver.posts.append(path)
            self._answer(200, _RESPONSES[path]().SerializeToString())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Stay silent."""

    return Handler


@contextlib.contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """Serve OTLP/HTTP on 127.0.0.1 in a thread for the block; stop it at the end."""
    receiver = Receiver()
    server = http.server.ThreadingHTTPServer((HOST, 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-receiver"
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        assert not thread.is_alive(), "the OTLP receiver did not stop within 10 s"
