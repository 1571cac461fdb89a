"""OpenTelemetry end to end: the demo under uvicorn exporting OTLP/HTTP to a real receiver.

The receiver (otlp_receiver.py) decodes the protobuf the SDK's exporters send, so these
tests see what a collector would: the incident span under the request's server span,
the victim's span event, the metrics. Then the faults: a collector that hangs or is
down costs the service nothing. Last, ``loophound demo --otel``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otlp_receiver import ARRIVAL_BOUND, ReceivedSpan, Receiver, attributes_of, otlp_receiver
from servers import HOST, VARIANTS, Server, free_port, get, start_server

UVICORN = next(v for v in VARIANTS if v.name == "uvicorn-asyncio")
#: The demo's views, found without importing them (that would need Django's settings).
_VIEWS_SPEC = importlib.util.find_spec("loophound.demo.views")
assert _VIEWS_SPEC is not None
assert _VIEWS_SPEC.origin is not None
VIEWS = os.path.abspath(_VIEWS_SPEC.origin)
SERVER_KIND = 2  # SPAN_KIND_SERVER in OTLP
INTERNAL_KIND = 1
#: Rounds of "a clean request in flight, then a blocking one" before giving up.
ROUNDS = 3


def sleep_line() -> int:
    """Return the line of ``time.sleep(0.2)`` in the demo's views."""
    with open(VIEWS, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if "time.sleep(0.2)" in line:
                return number
    raise AssertionError("time.sleep(0.2) not found in the demo's views")


def otel_env(endpoint: str) -> dict[str, str]:
    """Return the environment that makes the demo export to ``endpoint`` over OTLP/HTTP."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_SERVICE_NAME": "loophound-test",
        "LOOPHOUND_SINKS": "jsonl,otel",
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP receiver on 127.0.0.1, stopped after the test."""
    with otlp_receiver() as started:
        yield started


@pytest.fixture
def traced_demo(tmp_path: Path, receiver: Receiver) -> Iterator[Server]:
    """The demo under uvicorn, exporting to the receiver; stopped by pid after the test."""
    port = free_port()
    server = start_server(
        UVICORN.command(port), port, tmp_path / "events.jsonl", otel_env(receiver.endpoint)
    )
    try:
        yield server
    finally:
        server.stop()


def blocking_with_bystander(server: Server) -> list[int]:
    """GET /blocking/sleep/ while a /clean/async/ request is in flight; return the statuses."""
    statuses: list[int] = []
    bystander = threading.Thread(target=lambda: statuses.append(get(server.url("/clean/async/"))))
    bystander.start()
    # The clean view waits 50 ms in asyncio.sleep: start the blocking one inside that wait.
    threading.Event().wait(0.02)
    statuses.append(get(server.url("/blocking/sleep/")))
    bystander.join(60)
    assert not bystander.is_alive()
    return statuses


def server_spans(spans: list[ReceivedSpan], path: str) -> list[ReceivedSpan]:
    """Return the SERVER spans of requests to ``path``."""
    return [
        s
        for s in spans
        if s.kind == SERVER_KIND
        and (s.attributes.get("http.target") == path or s.attributes.get("url.path") == path)
    ]


def incidents(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """Return loophound's incident spans of the blocking sleep view."""
    return [
        s
        for s in spans
        if s.name == "blocking time.sleep" and s.attributes.get("http.route") == "blocking/sleep/"
    ]


def test_the_incident_span_reaches_the_collector_under_the_server_span(
    traced_demo: Server, receiver: Receiver
) -> None:
    """Over real OTLP/HTTP, the incident span is the child of its request's server span."""
    assert blocking_with_bystander(traced_demo) == [200, 200]

    def arrived(spans: list[ReceivedSpan]) -> bool:
        found = incidents(spans)
        return bool(found) and any(
            s.span_id == found[0].parent_span_id for s in server_spans(spans, "/blocking/sleep/")
        )

    spans = receiver.wait_for(arrived)
    assert receiver.errors == []
    (incident,) = incidents(spans)
    (server,) = server_spans(spans, "/blocking/sleep/")
    assert incident.parent_span_id == server.span_id
    assert incident.trace_id == server.trace_id
    assert incident.kind == INTERNAL_KIND
    assert incident.status_code == 0  # STATUS_CODE_UNSET
    assert incident.scope == "loophound"
    assert incident.resource["service.name"] == "loophound-test"
    assert incident.end - incident.start >= 0.2e9
    attributes = incident.attributes
    assert attributes["code.function.name"] == "blocking_sleep"
    assert attributes["code.file.path"] == VIEWS
    assert attributes["code.line.number"] == sleep_line()
    assert attributes["loophound.kind"] == "call"
    assert attributes["loophound.operation"] == "time.sleep"
    assert "patches" in attributes["loophound.detectors"]
    assert len(attributes["loophound.fingerprint"]) == 16
    assert attributes["loophound.duration"] >= 0.2
    assert attributes["http.request.method"] == "GET"
    assert 0 < len(attributes["code.stacktrace"].encode("utf-8")) < 2000
    assert (
        attributes["code.stacktrace"]
        .rstrip("\n")
        .endswith(f'File "{VIEWS}", line {sleep_line()}, in blocking_sleep')
    )
    # The jsonl log names the same trace and span: the request's ids.
    logged = traced_demo.wait_for(
        lambda events: any(e["operation"] == "time.sleep" for e in events)
    )
    (record,) = [e for e in logged if e["operation"] == "time.sleep"]
    assert record["request"]["trace_id"] == server.trace_id
    assert record["request"]["span_id"] == server.span_id


def sum_points(metrics: list[Any]) -> list[dict[str, Any]]:
    """Return the attributes and value of every data point of OTLP sum metrics."""
    return [
        {**attributes_of(point.attributes), "value": point.as_int}
        for metric in metrics
        for point in metric.sum.data_points
    ]


def test_metrics_reach_the_collector(traced_demo: Server, receiver: Receiver) -> None:
    """Over real OTLP/HTTP, the incidents counter has its labels and the loop delay is sent."""
    assert get(traced_demo.url("/blocking/sleep/")) == 200

    def counted(point: dict[str, Any]) -> bool:
        return point.get("http.route") == "blocking/sleep/" and point["value"] >= 1

    incidents_sent = receiver.wait_for_metric(
        "loophound.blocking.incidents", lambda found: any(map(counted, sum_points(found)))
    )
    points = [p for p in sum_points(incidents_sent) if counted(p)]
    assert points, sum_points(incidents_sent)
    point = points[-1]
    assert point["loophound.operation"] == "time.sleep"
    assert point["loophound.kind"] == "call"
    assert str(point["loophound.culprit"]).endswith(f"views.py:{sleep_line()}")
    delays = receiver.wait_for_metric(
        "loophound.loop.delay",
        lambda found: any(p.count > 0 for m in found for p in m.histogram.data_points),
    )
    assert delays
    assert delays[0].unit == "s"
    assert any(p.count > 0 for m in delays for p in m.histogram.data_points)
    durations = receiver.wait_for_metric("loophound.blocking.duration")
    assert durations
    assert durations[0].unit == "s"
    for name in ("loophound.events.dropped", "loophound.sink.failures"):
        assert receiver.wait_for_metric(name), name
    assert receiver.errors == []


def delayed_by(spans: list[ReceivedSpan], incident: ReceivedSpan) -> list[ReceivedSpan]:
    """Return the /clean/async/ server spans whose `loophound.delayed` names ``incident``."""
    return [
        s
        for s in server_spans(spans, "/clean/async/")
        if any(
            e.name == "loophound.delayed"
            and e.attributes.get("loophound.incident.span_id") == incident.span_id
            for e in s.events
        )
    ]


def test_the_victim_server_span_carries_the_delayed_event(
    traced_demo: Server, receiver: Receiver
) -> None:
    """The clean request that waited for the blocking one gets `loophound.delayed` on its span."""
    delayed: list[ReceivedSpan] = []
    victimized = False
    for round_number in range(1, ROUNDS + 1):
        assert blocking_with_bystander(traced_demo) == [200, 200]
        spans = receiver.wait_for(
            lambda spans, n=round_number: (
                len(incidents(spans)) >= n and len(server_spans(spans, "/clean/async/")) >= n
            )
        )
        incident = max(incidents(spans), key=lambda s: s.start)
        if not incident.attributes.get("loophound.victims.count"):
            continue  # the bystander was not in flight yet: try again
        victimized = True
        spans = receiver.wait_for(lambda spans, i=incident: bool(delayed_by(spans, i)), bound=3.0)
        delayed = delayed_by(spans, incident)
        break
    assert victimized, f"the bystander was never in flight during a stall in {ROUNDS} rounds"
    assert delayed, "no /clean/async/ server span carries loophound.delayed"
    (event,) = [e for e in delayed[0].events if e.name == "loophound.delayed"]
    # Told as the stall began (the victim's span was surely open), before the culprit
    # was known: the event names the incident span, which names the line.
    assert event.attributes["loophound.incident.span_id"] == incident.span_id
    assert incident.attributes["code.line.number"] == sleep_line()
    assert any(
        link.attributes.get("loophound.relation") == "delayed_by" for link in delayed[0].links
    )


# --- faults ----------------------------------------------------------------------------


class Silent:
    """An endpoint that accepts connections and never reads or answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.accepted: list[socket.socket] = []

    @property
    def endpoint(self) -> str:
        """The URL to give the exporters."""
        return f"http://{HOST}:{self.sock.getsockname()[1]}"

    def connected(self) -> bool:
        """Return whether an exporter connected (waiting up to 15 s); keep it hanging."""
        self.sock.settimeout(ARRIVAL_BOUND)
        try:
            connection, _ = self.sock.accept()
        except TimeoutError:
            return False
        self.accepted.append(connection)
        return True

    def close(self) -> None:
        """Close the connections and the listening socket."""
        for connection in self.accepted:
            connection.close()
        self.sock.close()


@pytest.mark.parametrize("fault", ["hangs", "down"])
def test_a_collector_that_hangs_or_is_down_costs_the_service_nothing(
    fault: str, tmp_path: Path
) -> None:
    """With the OTLP endpoint silent or closed, requests answer 200 and the log still fills."""
    silent = Silent() if fault == "hangs" else None
    # Down: a port nobody listens on, so every export is refused.
    endpoint = silent.endpoint if silent is not None else f"http://{HOST}:{free_port()}"
    port = free_port()
    try:
        server = start_server(
            UVICORN.command(port), port, tmp_path / "events.jsonl", otel_env(endpoint)
        )
        try:
            statuses = [get(server.url("/blocking/sleep/")) for _ in range(3)]
            # The exporters have tried by now (and, when it hangs, are stuck in a request).
            exporters_connected = silent.connected() if silent is not None else True
            statuses += [get(server.url("/clean/async/")), get(server.url("/blocking/sleep/"))]
            events = server.wait_for(
                lambda found: sum(e["operation"] == "time.sleep" for e in found) >= 4
            )
        finally:
            server.stop()
    finally:
        if silent is not None:
            silent.close()
    assert exporters_connected
    assert statuses == [200] * 5
    sleeps = [e for e in events if e["operation"] == "time.sleep"]
    assert len(sleeps) == 4
    assert {e["request"]["route"] for e in sleeps} == {"blocking/sleep/"}
    # The ids of the OpenTelemetry server spans are still in the log.
    assert all(len(e["request"]["trace_id"]) == 32 for e in sleeps)


# --- loophound demo --otel ---------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the loophound command in its own process group; kill the group after 120 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPHOUND_", "OTEL_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "loophound.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the command and the server it started
        process.communicate(timeout=15)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_demo_otel_console_prints_incident_spans(tmp_path: Path) -> None:
    """`loophound demo --otel console` exits 0 and the server prints the incident spans."""
    out = tmp_path / "events.jsonl"
    done = run_cli("demo", "--otel", "console", "--requests", "1", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"name": "blocking time.sleep"' in done.stdout
    assert '"name": "GET /blocking/sleep/"' in done.stdout  # the server spans they nest in
    assert "blocking/sleep/" in done.stdout  # the summary table
    assert out.exists()


def test_demo_otel_rejects_an_unknown_exporter(tmp_path: Path) -> None:
    """`loophound demo --otel bogus` exits 2 naming the argument and the valid choices."""
    done = run_cli("demo", "--otel", "bogus", cwd=tmp_path)
    assert done.returncode == 2
    assert "argument --otel: invalid choice: 'bogus'" in done.stderr
    for choice in ("console", "otlp", "prometheus"):
        assert choice in done.stderr
    assert done.stdout == ""
