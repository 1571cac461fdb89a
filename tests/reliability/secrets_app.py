"""An ASGI app that blocks its loop with the request's secrets in hand (served by uvicorn).

OpenTelemetry's ASGI middleware (a server span per request) around LoophoundMiddleware
around a bare app. ``/blocking/`` reads the whole body and the query's ``token``, then
blocks the loop in ways whose arguments carry that token: ``time.sleep``, a program
run with the token as its argument, a URL with it in the query string fetched from a
local HTTP server with it in a header; then, in a step of its own, a CPU stall with it
in a local variable.
``/clean/`` only awaits (``?wait=`` seconds). ``/telemetry/`` returns every finished
span and the metrics.

loophound's logger and the warnings it issues go to ``SECRETS_APP_LOG``; the JSON-lines
log is ``LOOPHOUND_JSONL``.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import subprocess
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import parse_qs

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loophound.asgi import LoophoundMiddleware

_log = logging.FileHandler(os.environ["SECRETS_APP_LOG"], encoding="utf-8")
_log.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
for name in ("loophound", "py.warnings"):
    logging.getLogger(name).addHandler(_log)
    logging.getLogger(name).setLevel(logging.DEBUG)
logging.captureWarnings(capture=True)

spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
metric_reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[metric_reader])
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _Quiet(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and ``ok``."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Stay silent."""


_upstream = http.server.HTTPServer(("127.0.0.1", 0), _Quiet)
threading.Thread(target=_upstream.serve_forever, daemon=True).start()
UPSTREAM = f"http://127.0.0.1:{_upstream.server_address[1]}"


def spin(seconds: float, token: str) -> int:
    """Burn CPU for ``seconds`` with ``token`` in a local variable."""
    end = time.perf_counter() + seconds
    rounds = 0
    while time.perf_counter() < end:
        rounds += len(token) > 0
    return rounds


def block_with(token: str) -> None:
    """Block the loop in several ways, each given the token."""
    time.sleep(0.01)
    subprocess.run(["true", token], check=False)
    request = urllib.request.Request(
        f"{UPSTREAM}/echo?token={token}", headers={"Authorization": f"Bearer {token}"}
    )
    with _no_proxy.open(request, timeout=10) as response:
        response.read()


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send: Any, body: object) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _telemetry() -> dict[str, Any]:
    found = [
        {
            "name": span.name,
            "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
            "attributes": dict(span.attributes or {}),
            "events": [[e.name, dict(e.attributes or {})] for e in span.events],
            "links": [dict(link.attributes or {}) for link in span.links],
        }
        for span in spans.get_finished_spans()
    ]
    metrics = metric_reader.get_metrics_data()
    return {"spans": found, "metrics": json.loads(metrics.to_json()) if metrics else None}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Serve the routes of the module docstring."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    query = parse_qs(scope.get("query_string", b"").decode())
    body = await _read_body(receive)
    token = query.get("token", [""])[0]
    if scope["path"] == "/blocking/":
        block_with(token)
        await asyncio.sleep(0)
        spin(0.15, token)  # a step of its own: a stall, sampled
        await _respond(send, {"token": token, "body": len(body)})
    elif scope["path"] == "/clean/":
        await asyncio.sleep(float(query.get("wait", ["0.001"])[0]))
        await _respond(send, {"clean": True})
    elif scope["path"] == "/telemetry/":
        await _respond(send, _telemetry())
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


application = OpenTelemetryMiddleware(
    LoophoundMiddleware(app, tracer_provider=tracer_provider, meter_provider=meter_provider),
    tracer_provider=tracer_provider,
    meter_provider=meter_provider,
)
