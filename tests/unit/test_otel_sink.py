"""The otel sink with the real OpenTelemetry SDK: incident spans, victims, metrics, faults.

Every test passes its own tracer and meter providers (in-memory exporter and reader);
the global providers are set only in child processes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import loophound
from helpers import BOUND, line_of
from loophound import _context
from loophound._config import resolve_config
from loophound._events import Event, Frame
from loophound._recorder import Stats
from loophound.asgi import LoophoundMiddleware
from loophound.detectors.watchdog import LoopDelays
from loophound.sinks.otel import STACKTRACE_LIMIT, OtelSink

HERE = os.path.abspath(__file__)
SLEEP = 0.2
SPIN = 0.3


@dataclass
class Otel:
    """A tracer provider with an in-memory exporter and a meter provider with a reader."""

    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Return the finished spans (named ``name``, when given)."""
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """Return the only finished span named ``name``."""
        found = self.spans(name)
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def points(self, metric: str) -> list[Any]:
        """Return the data points collected now for the instrument named ``metric``."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource_metrics in data.resource_metrics if data is not None else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for m in scope_metrics.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def unit(self, metric: str) -> str | None:
        """Return the unit of the instrument named ``metric``, if it was collected."""
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data is not None else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for m in scope_metrics.metrics:
                    if m.name == metric:
                        return str(m.unit)
        return None


@pytest.fixture
def otel() -> Iterator[Otel]:
    """SDK providers for one test, shut down after it (never the global ones)."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield Otel(tracer_provider, exporter, meter_provider, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    assert not _context.tracing(), "a test left the span reader installed"


# --- the code that blocks: each culprit line carries a marker --------------------------


def sleep_on_the_loop(seconds: float = SLEEP) -> None:
    """Block the loop with time.sleep."""
    time.sleep(seconds)  # culprit-sleep


def spin(seconds: float = SPIN) -> None:
    """Burn CPU on the loop: a stall, no blocking primitive."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # culprit-spin
        pass


def recurse(depth: int) -> None:
    """Recurse ``depth`` frames deep, then block on the innermost one."""
    if depth == 0:
        time.sleep(0.001)  # culprit-deep
        return
    recurse(depth - 1)


def sleep_many_times(count: int) -> None:
    """Call time.sleep ``count`` times from one line."""
    for _ in range(count):
        time.sleep(0.001)  # culprit-repeat


# --- driving the middleware ------------------------------------------------------------

App = Callable[[dict[str, Any], Any, Any], Coroutine[Any, Any, None]]


def scope(path: str) -> dict[str, Any]:
    """Return a minimal HTTP scope for ``path``."""
    return {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}


async def serve(
    app: LoophoundMiddleware, path: str, otel: Otel | None = None, name: str = "server"
) -> int | None:
    """Serve one request; inside a SERVER span when ``otel`` is given (its span id)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    if otel is None:
        await app(scope(path), receive, send)
        return None
    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span(f"{name} {path}", kind=SpanKind.SERVER) as span:
        await app(scope(path), receive, send)
        return span.get_span_context().span_id


def with_lifespan(app: App) -> App:
    """Return ``app`` answering the lifespan startup, as a real application does."""

    async def wrapped(request: dict[str, Any], receive: Any, send: Any) -> None:
        if request["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
            return
        await app(request, receive, send)

    return wrapped


def middleware(app: App, otel: Otel, **config: Any) -> LoophoundMiddleware:
    """Wrap ``app`` in the middleware with the otel sink on ``otel``'s providers."""
    config.setdefault("sinks", ["otel"])
    return LoophoundMiddleware(
        with_lifespan(app),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        threshold=0.1,
        **config,
    )


async def start_up(app: LoophoundMiddleware) -> None:
    """Run the lifespan startup through ``app`` (the guard installs there), as servers do."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}]
    await asyncio.sleep(0)  # requests come in later loop steps, which the guard times


def run_and_uninstall(
    app: LoophoundMiddleware, main: Callable[[], Coroutine[Any, Any, Any]]
) -> Any:
    """Start ``app`` up and run ``main()`` on a new loop; flush, then uninstall the guard."""

    async def started_then_main() -> Any:
        await start_up(app)
        return await main()

    try:
        result = asyncio.run(started_then_main())
        guard = app.guard
        assert guard is not None
        assert guard.flush(BOUND)
    finally:
        if app.guard is not None:
            app.guard.uninstall()
    return result


def hex16(span_id: int) -> str:
    """Return a span id as W3C hex."""
    return format(span_id, "016x")


# --- incident spans --------------------------------------------------------------------


def test_incident_span_is_a_child_of_the_server_span_outside_the_middleware(otel: Otel) -> None:
    """A blocking call in a request traced outside the middleware is a child span covering it."""
    called_at: list[int] = []
    seen: list[Event] = []

    async def app(_scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        called_at.append(time.time_ns())
        sleep_on_the_loop()
        called_at.append(time.time_ns())

    wrapped = middleware(app, otel, on_event=seen.append)
    server_id = run_and_uninstall(wrapped, lambda: serve(wrapped, "/items/3/", otel))

    server = otel.span("server /items/3/")
    span = otel.span("blocking time.sleep")
    assert span.parent is not None
    assert span.parent.span_id == server_id
    assert span.context.trace_id == server.context.trace_id
    assert span.kind is SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.UNSET
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= called_at[0]
    assert span.end_time >= called_at[1]
    assert span.end_time - span.start_time >= SLEEP * 1e9
    attributes = dict(span.attributes or {})
    assert attributes["code.function.name"] == "sleep_on_the_loop"
    assert attributes["code.file.path"] == HERE
    assert attributes["code.line.number"] == line_of("# culprit-sleep", HERE)
    assert attributes["loophound.kind"] == "call"
    assert attributes["loophound.operation"] == "time.sleep"
    assert "patches" in attributes["loophound.detectors"]
    assert len(str(attributes["loophound.fingerprint"])) == 16
    assert float(attributes["loophound.duration"]) >= SLEEP  # type: ignore[arg-type]
    assert attributes["http.request.method"] == "GET"
    assert "http.route" not in attributes  # no route resolver without Django
    stacktrace = str(attributes["code.stacktrace"])
    assert stacktrace.startswith("Traceback (most recent call last):\n")
    assert stacktrace.rstrip("\n").endswith(
        f'File "{HERE}", line {line_of("# culprit-sleep", HERE)}, in sleep_on_the_loop'
    )
    # The request dict carries the server span's ids (the jsonl log's link to the trace).
    (event,) = [e for e in seen if e.operation == "time.sleep"]
    assert event.request is not None
    assert event.request["trace_id"] == format(server.context.trace_id, "032x")
    assert event.request["span_id"] == hex16(server.context.span_id)
    assert attributes["loophound.request.id"] == event.request["id"]


def test_a_cpu_stall_is_a_loop_stall_span_covering_the_interval(otel: Otel) -> None:
    """A 0.3 s CPU spin with threshold 0.1 becomes a `loop stall` span over the stall."""
    spun_at: list[int] = []

    async def app(_scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        spun_at.append(time.time_ns())
        spin()
        spun_at.append(time.time_ns())

    wrapped = middleware(app, otel)
    server_id = run_and_uninstall(wrapped, lambda: serve(wrapped, "/cpu/", otel))

    span = otel.span("loop stall")
    assert span.parent is not None
    assert span.parent.span_id == server_id
    assert span.kind is SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.UNSET
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= spun_at[0]
    assert span.end_time >= spun_at[1]
    assert span.end_time - span.start_time >= SPIN * 1e9
    attributes = dict(span.attributes or {})
    assert attributes["loophound.kind"] == "stall"
    assert "watchdog" in attributes["loophound.detectors"]
    assert attributes["code.function.name"] == "spin"
    assert attributes["code.file.path"] == HERE
    assert attributes["code.line.number"] == line_of("# culprit-spin", HERE)
    assert float(attributes["loophound.duration"]) >= SPIN  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("block", "name"), [(sleep_on_the_loop, "blocking time.sleep"), (spin, "loop stall")]
)
def test_a_span_opened_inside_the_app_is_the_parent(
    otel: Otel, block: Callable[[], None], name: str
) -> None:
    """With the span opened inside the middleware (by the app), the incident nests under it."""
    inner_ids: list[int] = []
    tracer = otel.tracer_provider.get_tracer("app")

    async def app(_scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        with tracer.start_as_current_span("view") as view:
            inner_ids.append(view.get_span_context().span_id)
            block()

    wrapped = middleware(app, otel)
    run_and_uninstall(wrapped, lambda: serve(wrapped, "/inner/"))

    span = otel.span(name)
    assert span.parent is not None
    assert span.parent.span_id == inner_ids[0]
    assert span.context.trace_id == otel.span("view").context.trace_id


def test_without_any_span_the_incident_is_a_root_span(otel: Otel) -> None:
    """With no span active where it blocked, the incident span is a root span."""
    seen: list[Event] = []

    async def app(_scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        sleep_on_the_loop(0.01)

    wrapped = middleware(app, otel, on_event=seen.append)
    run_and_uninstall(wrapped, lambda: serve(wrapped, "/plain/"))

    span = otel.span("blocking time.sleep")
    assert span.parent is None
    assert len(otel.spans()) == 1
    (event,) = [e for e in seen if e.operation == "time.sleep"]
    assert event.request is not None
    assert "trace_id" not in event.request


def test_the_stacktrace_is_capped_and_keeps_the_innermost_frames(otel: Otel) -> None:
    """A deep stack gives a code.stacktrace under 2000 bytes that ends with the culprit."""

    async def app(_scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        recurse(150)

    wrapped = middleware(app, otel)
    run_and_uninstall(wrapped, lambda: serve(wrapped, "/deep/", otel))

    attributes = dict(otel.span("blocking time.sleep").attributes or {})
    stacktrace = str(attributes["code.stacktrace"])
    assert len(stacktrace.encode("utf-8")) < STACKTRACE_LIMIT
    lines = stacktrace.rstrip("\n").split("\n")
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1] == "  ..."  # the outer frames were cut
    deep = line_of("# culprit-deep", HERE)
    assert lines[-1] == f'  File "{HERE}", line {deep}, in recurse'
    assert lines[-2] == f'  File "{HERE}", line {deep + 2}, in recurse'
    assert attributes["code.line.number"] == deep


def make_event(**fields: Any) -> Event:
    """Return an Event with plausible defaults for the fields not given."""
    culprit = Frame(HERE, 10, "view")
    values: dict[str, Any] = {
        "kind": "call",
        "operation": "time.sleep",
        "started_at": time.time_ns(),
        "duration": 0.25,
        "frames": (culprit,),
        "culprit": culprit,
        "fingerprint": "0123456789abcdef",
        "thread_id": 1,
        "thread_name": "MainThread",
        "task": "Task-1",
        "detectors": ("patches",),
    }
    values.update(fields)
    return Event(**values)


def deliver(otel: Otel, events: Sequence[Event]) -> None:
    """Deliver ``events`` straight to an OtelSink on ``otel``'s providers, then close it."""
    sink = OtelSink(Stats(), LoopDelays(), otel.tracer_provider, otel.meter_provider)
    try:
        for event in events:
            sink.deliver(event)
    finally:
        sink.close()


def test_the_stacktrace_stays_under_the_limit_when_the_kept_lines_fill_it(otel: Otel) -> None:
    """Kept frame lines that fill the budget exactly still give a stacktrace under the limit."""
    # 20 lines of 98 bytes fill the 1960 bytes the frames may take; the 21st is cut.
    frames = tuple(Frame("/" + "a" * 73, 1, "f") for _ in range(80))
    deliver(otel, [make_event(frames=frames, culprit=frames[-1])])
    attributes = dict(otel.span("blocking time.sleep").attributes or {})
    assert len(str(attributes["code.stacktrace"]).encode("utf-8")) < STACKTRACE_LIMIT


def test_http_route_goes_on_the_span_and_the_counter(otel: Otel) -> None:
    """An incident of a request with a route has http.route on its span and counter labels."""
    request = {"id": "7", "method": "GET", "path": "/items/7/", "route": "items/<int:pk>/"}
    deliver(otel, [make_event(request=request)])

    attributes = dict(otel.span("blocking time.sleep").attributes or {})
    assert attributes["http.route"] == "items/<int:pk>/"
    assert attributes["http.request.method"] == "GET"
    assert attributes["loophound.request.id"] == "7"
    (point,) = otel.points("loophound.blocking.incidents")
    assert point.attributes["http.route"] == "items/<int:pk>/"
    assert point.value == 1


def test_a_quiet_event_is_counted_but_not_traced(otel: Otel) -> None:
    """A quiet incident (a module load) adds to the counter and makes no span."""
    deliver(otel, [make_event(operation="import", quiet=True)])
    assert otel.spans() == []
    (point,) = otel.points("loophound.blocking.incidents")
    assert point.attributes["loophound.operation"] == "import"


# --- victims ---------------------------------------------------------------------------


def test_a_victim_request_gets_a_delayed_event_and_links(otel: Otel) -> None:
    """A request waiting while another blocks gets `loophound.delayed` and links both ways."""

    async def app(request: dict[str, Any], _receive: Any, _send: Any) -> None:
        if request["path"] == "/slow/":
            sleep_on_the_loop()
        else:
            await asyncio.sleep(0.6)

    wrapped = middleware(app, otel)

    async def main() -> None:
        victim = asyncio.create_task(serve(wrapped, "/victim/", otel))
        await asyncio.sleep(0.05)
        await serve(wrapped, "/slow/", otel)
        await victim

    run_and_uninstall(wrapped, main)

    incident = otel.span("blocking time.sleep")
    victim = otel.span("server /victim/")
    (delayed,) = [e for e in victim.events if e.name == "loophound.delayed"]
    delayed_attributes = dict(delayed.attributes or {})
    assert delayed_attributes["loophound.incident.trace_id"] == format(
        incident.context.trace_id, "032x"
    )
    assert delayed_attributes["loophound.incident.span_id"] == hex16(incident.context.span_id)
    # Told as the stall began, before its culprit was known: the link leads to it.
    assert delayed_attributes["loophound.kind"] == "stall"
    assert dict(incident.attributes or {})["code.line.number"] == line_of("# culprit-sleep", HERE)
    assert [link.context.span_id for link in victim.links] == [incident.context.span_id]
    assert dict(victim.links[0].attributes or {}) == {"loophound.relation": "delayed_by"}
    assert [link.context.span_id for link in incident.links] == [victim.context.span_id]
    assert dict(incident.links[0].attributes or {}) == {"loophound.relation": "delayed"}
    assert dict(incident.attributes or {})["loophound.victims.count"] == 1
    (victims,) = otel.points("loophound.stall.victims")
    assert victims.count == 1
    assert victims.sum == 1


def test_a_victim_whose_wait_ends_inside_the_stall_still_gets_the_event(otel: Otel) -> None:
    """A victim that finishes right after the stall (like the demo's /clean/async/) is told."""

    async def app(request: dict[str, Any], _receive: Any, _send: Any) -> None:
        if request["path"] == "/slow/":
            sleep_on_the_loop()
        else:
            await asyncio.sleep(0.1)

    wrapped = middleware(app, otel)

    async def main() -> None:
        victim = asyncio.create_task(serve(wrapped, "/victim/", otel))
        await asyncio.sleep(0.02)
        await serve(wrapped, "/slow/", otel)
        await victim

    run_and_uninstall(wrapped, main)

    assert dict(otel.span("blocking time.sleep").attributes or {})["loophound.victims.count"] == 1
    victim = otel.span("server /victim/")
    assert [e.name for e in victim.events] == ["loophound.delayed"]


# --- metrics ---------------------------------------------------------------------------


def test_metrics_count_incidents_with_their_labels_and_durations(otel: Otel) -> None:
    """The incidents counter has kind, operation, route and culprit labels; durations in s."""

    async def app(_scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        sleep_on_the_loop()

    wrapped = middleware(app, otel)
    run_and_uninstall(wrapped, lambda: serve(wrapped, "/m/", otel))

    (point,) = otel.points("loophound.blocking.incidents")
    labels = dict(point.attributes)
    assert set(labels) == {
        "loophound.kind",
        "loophound.operation",
        "http.route",
        "loophound.culprit",
    }
    assert labels["loophound.kind"] == "call"
    assert labels["loophound.operation"] == "time.sleep"
    assert labels["http.route"] == "none"
    assert str(labels["loophound.culprit"]).endswith(
        f"test_otel_sink.py:{line_of('# culprit-sleep', HERE)}"
    )
    assert point.value == 1
    assert otel.unit("loophound.blocking.incidents") == "{incident}"
    (duration,) = otel.points("loophound.blocking.duration")
    assert otel.unit("loophound.blocking.duration") == "s"
    assert duration.count == 1
    assert duration.sum >= SLEEP
    assert dict(duration.attributes) == labels


def test_loop_delay_histogram_fills_from_heartbeats_without_incidents(otel: Otel) -> None:
    """The loop-delay histogram has data points from heartbeats when nothing blocked."""
    guard = loophound.install(sinks=(), meter_provider=otel.meter_provider, threshold=0.1)

    async def main() -> int:
        deadline = time.monotonic() + BOUND
        count = 0
        while count < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            # Collected off the loop: the test itself must not block it.
            points = await asyncio.to_thread(otel.points, "loophound.loop.delay")
            count = sum(p.count for p in points)
        return count

    try:
        beats = asyncio.run(main())
    finally:
        guard.uninstall()
    assert beats >= 5
    assert otel.unit("loophound.loop.delay") == "s"
    assert otel.points("loophound.blocking.incidents") == []
    assert otel.spans() == []
    # After uninstall no heartbeat is recorded any more.
    assert guard.loop_delays.observers == ()


def test_observable_counters_report_dropped_events_and_sink_failures(otel: Otel) -> None:
    """loophound.events.dropped and loophound.sink.failures read the guard's own counters."""
    entered = threading.Event()
    release = threading.Event()

    def stuck_then_broken(_event: Event) -> None:
        entered.set()
        release.wait(BOUND)
        raise RuntimeError("this sink breaks")

    async def main() -> None:
        sleep_on_the_loop(0.001)
        assert await asyncio.to_thread(entered.wait, BOUND)
        # The dispatcher is stuck in the callback: a queue of two overflows.
        sleep_many_times(10)
        release.set()

    guard = loophound.install(
        sinks=(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        on_event=stuck_then_broken,
        queue_size=2,
        detectors=["patches"],
    )
    try:
        asyncio.run(main())
        assert guard.flush(BOUND)
    finally:
        release.set()
        guard.uninstall()
    assert guard.stats.dropped >= 8
    assert guard.stats.sink_failures == 1
    (dropped,) = otel.points("loophound.events.dropped")
    (failures,) = otel.points("loophound.sink.failures")
    assert dropped.value == guard.stats.dropped
    assert failures.value == 1


# --- providers and settings ------------------------------------------------------------


@pytest.mark.parametrize("given", ["tracer_provider", "meter_provider", "both"])
def test_given_providers_are_used_and_add_the_otel_sink(otel: Otel, given: str) -> None:
    """Passing a provider adds the otel sink by itself, and that provider gets the data."""
    providers: dict[str, Any] = {}
    if given in {"tracer_provider", "both"}:
        providers["tracer_provider"] = otel.tracer_provider
    if given in {"meter_provider", "both"}:
        providers["meter_provider"] = otel.meter_provider

    async def main() -> None:
        sleep_on_the_loop(0.001)

    guard = loophound.install(sinks=(), detectors=["patches"], **providers)
    try:
        assert "otel" in guard.config.output_sinks()
        assert _context.tracing()
        asyncio.run(main())
        assert guard.flush(BOUND)
    finally:
        guard.uninstall()
    spans = otel.spans("blocking time.sleep")
    points = otel.points("loophound.blocking.incidents")
    assert len(spans) == (1 if "tracer_provider" in providers else 0)
    assert len(points) == (1 if "meter_provider" in providers else 0)


GLOBAL_PROVIDERS = textwrap.dedent(
    """
    import asyncio, json, time
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import loophound

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    async def main():
        with trace.get_tracer("child").start_as_current_span("request") as request:
            time.sleep(0.01)
        return request.get_span_context().span_id

    guard = loophound.install(sinks=["otel"], detectors=["patches"])
    request_id = asyncio.run(main())
    guard.flush(5)
    guard.uninstall()
    spans = [s for s in exporter.get_finished_spans() if s.name == "blocking time.sleep"]
    counted = [
        p.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "loophound.blocking.incidents"
        for p in m.data.data_points
    ]
    print(json.dumps({
        "spans": len(spans),
        "parent_is_request": spans[0].parent.span_id == request_id,
        "counted": counted,
    }))
    """
)


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter without LOOPHOUND_* or OTEL_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPHOUND_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_without_providers_the_global_ones_are_used() -> None:
    """With no provider given, sinks=['otel'] sends spans and metrics to the global providers."""
    done = run_child(GLOBAL_PROVIDERS)
    assert done.returncode == 0, done.stderr
    result = done.stdout.strip().splitlines()[-1]
    assert result == '{"spans": 1, "parent_is_request": true, "counted": [1]}'


@pytest.mark.parametrize(
    ("key", "value"),
    [("tracer_provider", 5), ("meter_provider", "prometheus"), ("tracer_provider", object)],
)
def test_a_bad_provider_is_a_configuration_error_naming_key_and_value(
    key: str, value: object
) -> None:
    """A provider setting that is not a provider is refused, naming the key and the value."""
    with pytest.raises(loophound.ConfigurationError) as raised:
        loophound.install(**{key: value})
    message = str(raised.value)
    assert f"invalid value for {key}: {value!r}" in message
    assert "OpenTelemetry provider" in message
    with pytest.raises(loophound.ConfigurationError, match=key):
        LoophoundMiddleware(lambda *_: None, **{key: value})  # type: ignore[arg-type, return-value]
    assert loophound.active_guard() is None


def test_providers_cannot_come_from_the_environment() -> None:
    """LOOPHOUND_TRACER_PROVIDER is an unknown setting: providers are objects, set in code."""
    with pytest.raises(loophound.ConfigurationError, match="LOOPHOUND_TRACER_PROVIDER"):
        resolve_config({}, environ={"LOOPHOUND_TRACER_PROVIDER": "otlp"})


def test_uninstall_removes_the_span_reader(otel: Otel) -> None:
    """The otel sink installs the span reader and uninstall removes it again."""
    assert not _context.tracing()
    guard = loophound.install(sinks=["otel"], tracer_provider=otel.tracer_provider)
    try:
        assert _context.tracing()
        assert guard.loop_delays.observers != ()
        tracer = otel.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("outer") as outer:
            assert _context.current_span() == outer.get_span_context()
    finally:
        guard.uninstall()
    assert not _context.tracing()
    assert _context.current_span() is None
    assert guard.loop_delays.observers == ()


# --- rate cap --------------------------------------------------------------------------


def test_rate_cap_gives_one_span_and_the_counter_counts_every_call(otel: Otel) -> None:
    """With rate_limit=1, five calls from one line give one span and a count of five."""

    async def main() -> None:
        sleep_many_times(5)

    guard = loophound.install(
        sinks=(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        rate_limit=1,
        detectors=["patches"],
    )
    try:
        asyncio.run(main())
        assert guard.flush(BOUND)
    finally:
        guard.uninstall()
    assert len(otel.spans("blocking time.sleep")) == 1
    assert [p.value for p in otel.points("loophound.blocking.incidents")] == [5]


def test_rate_capped_calls_are_counted_with_the_next_admitted_one(otel: Otel) -> None:
    """Calls the cap suppressed are counted, and named on the span, when the next one passes."""

    async def main() -> None:
        sleep_many_times(5)
        await asyncio.sleep(0.35)  # past the window: the next call is admitted
        sleep_many_times(1)

    guard = loophound.install(
        sinks=(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        rate_limit=1,
        rate_window=0.3,
        detectors=["patches"],
    )
    try:
        asyncio.run(main())
        assert guard.flush(BOUND)
    finally:
        guard.uninstall()
    spans = otel.spans("blocking time.sleep")
    assert len(spans) == 2
    assert [dict(s.attributes or {}).get("loophound.suppressed") for s in spans] == [None, 4]
    assert [p.value for p in otel.points("loophound.blocking.incidents")] == [6]


# --- thread hops -----------------------------------------------------------------------


def test_thread_hops_are_put_on_the_server_span(otel: Otel) -> None:
    """A request that hops to a thread with sync_to_async gets thread-hop attributes."""
    sync = pytest.importorskip("asgiref.sync")
    from loophound import thread_hops

    installed_before = bool(thread_hops._installed)

    async def app(_scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        await sync.sync_to_async(time.sleep)(0.02)

    wrapped = middleware(app, otel)
    try:
        run_and_uninstall(wrapped, lambda: serve(wrapped, "/hop/", otel))
    finally:
        if not installed_before:
            thread_hops.uninstall()
    attributes = dict(otel.span("server /hop/").attributes or {})
    assert attributes["loophound.thread_hops.count"] == 1
    assert float(attributes["loophound.thread_hops.run"]) >= 0.02  # type: ignore[arg-type]
    assert float(attributes["loophound.thread_hops.wait"]) >= 0.0  # type: ignore[arg-type]


# --- faults ----------------------------------------------------------------------------


class HangingExporter(SpanExporter):
    """An exporter whose export() waits (up to a minute) until it is released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Hang until released, then count the spans."""
        self.entered.set()
        self.release.wait(60)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Release any export still hanging."""
        self.release.set()


def dispatcher_threads() -> set[threading.Thread]:
    """Return the live loophound dispatcher threads."""
    return {t for t in threading.enumerate() if t.name == "loophound-dispatcher"}


def test_a_hanging_span_exporter_does_not_block_the_loop_or_uninstall() -> None:
    """An exporter stuck in export() holds only the dispatcher; the loop and uninstall go on."""
    exporter = HangingExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    before = dispatcher_threads()
    guard = loophound.install(
        sinks=(), tracer_provider=tracer_provider, detectors=["patches"], flush_timeout=0.5
    )
    (dispatcher,) = dispatcher_threads() - before

    async def main() -> tuple[bool, int, bool]:
        sleep_on_the_loop(0.001)
        stuck = await asyncio.to_thread(exporter.entered.wait, BOUND)
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
            sleep_on_the_loop(0.001)  # more incidents queue up behind the stuck one
        return stuck, ticks, exporter.release.is_set()

    try:
        stuck, ticks, released = asyncio.run(main())
        flushed = guard.flush(0.2)
        guard.uninstall()
        uninstalled = not guard.installed
        still_stuck = dispatcher.is_alive()
    finally:
        exporter.release.set()
        guard.uninstall()
        dispatcher.join(BOUND)
        tracer_provider.shutdown()
    assert stuck
    assert ticks == 20
    assert not released
    assert not flushed  # the flush gave up instead of waiting for the exporter
    assert uninstalled
    assert still_stuck  # uninstall returned while the dispatcher was still inside export()
    assert not dispatcher.is_alive()
    assert exporter.exported >= 1
    assert not _context.tracing()


# --- without OpenTelemetry -------------------------------------------------------------

WITHOUT_OTEL = textwrap.dedent(
    """
    import sys
    sys.modules["opentelemetry"] = None  # as if it were not installed
    import asyncio, time
    import loophound
    from loophound.asgi import LoophoundMiddleware

    async def app(scope, receive, send):
        time.sleep(0.01)

    async def main(middleware):
        await middleware({"type": "http", "method": "GET", "path": "/x/"}, None, None)

    with loophound.capture(sinks=()) as events:
        asyncio.run(main(LoophoundMiddleware(app)))
    assert [e.operation for e in events if not e.quiet] == ["time.sleep"], events
    assert "trace_id" not in events[-1].request
    try:
        loophound.install(sinks=["otel"])
    except loophound.ConfigurationError as exc:
        print("ERROR", exc)
    assert loophound.active_guard() is None
    print(sorted(m for m in sys.modules if m.startswith("opentelemetry.")))
    """
)


def test_without_opentelemetry_the_guard_works_and_otel_asks_for_the_extra() -> None:
    """Without opentelemetry importable, the guard and middleware work; sinks=['otel'] says why."""
    done = run_child(WITHOUT_OTEL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "[]"
    error = lines[-2]
    assert error.startswith("ERROR loophound: invalid value for sinks: 'otel'")
    assert "pip install 'loophound[otel]'" in error
