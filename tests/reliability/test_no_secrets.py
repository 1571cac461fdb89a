"""Nothing sensitive leaks: request secrets reach no output, the demo's metrics stay local.

A request carrying a secret in its query string, headers, cookie and body makes a
view block its loop with that secret in hand (a sleep, a program run with it as its
argument, a URL with it in the query fetched with it in a header, a CPU stall with
it in a local). The secret is then looked for in everything loophound wrote: the
JSON-lines log, the logging and warnings output, the server's stdout and stderr,
loophound's spans, span events, links and metrics.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import socket
import sys
import threading
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from servers import HOST, REQUEST_BOUND, VARIANTS, Server, free_port, get, start_server

import loophound.cli

APP_DIR = Path(__file__).resolve().parent
UVICORN = next(v for v in VARIANTS if v.name == "uvicorn-asyncio")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(server: Server, path: str, data: bytes | None = None, **headers: str) -> Any:
    """Send a request to ``path`` and return the JSON it answers."""
    request = urllib.request.Request(server.url(path), data=data, headers=headers)
    with _OPENER.open(request, timeout=REQUEST_BOUND) as response:
        assert response.status == 200
        return json.loads(response.read())


def serve_secrets_app(tmp_path: Path) -> Server:
    """Start secrets_app under uvicorn, its stdout and stderr appended to server.out."""
    port = free_port()
    command = [
        "sh",
        "-c",
        'exec "$@" >>"$SERVER_OUT" 2>&1',  # exec: the pid stays the server's
        "sh",
        sys.executable,
        "-m",
        "uvicorn",
        "secrets_app:application",
        "--app-dir",
        str(APP_DIR),
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "asyncio",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    env = {
        "SERVER_OUT": str(tmp_path / "server.out"),
        "SECRETS_APP_LOG": str(tmp_path / "loophound.log"),
        "LOOPHOUND_SINKS": "jsonl,logging,warnings",
    }
    return start_server(command, port, tmp_path / "events.jsonl", env, ready_path="/clean/")


def loophound_telemetry(telemetry: dict[str, Any]) -> list[Any]:
    """Return what loophound put into OpenTelemetry: its spans, span events, links, metrics."""
    found: list[Any] = []
    for span in telemetry["spans"]:
        if span["scope"] == "loophound":
            found.append(span)
        else:  # another instrumentation's span: only what loophound added to it
            found += [e for e in span["events"] if e[0].startswith("loophound")]
            found += [link for link in span["links"] if "loophound.relation" in link]
    for resource in (telemetry["metrics"] or {}).get("resource_metrics", []):
        for scope in resource["scope_metrics"]:
            if scope["scope"]["name"] == "loophound":
                found.append(scope["metrics"])
    return found


def test_request_secrets_reach_no_output_of_loophound(tmp_path: Path) -> None:
    """A secret in query, headers, cookie and body is in no log, span, event or metric."""
    secret = f"S3CRET{uuid.uuid4().hex}"
    headers = {
        "Authorization": f"Bearer {secret}",
        "Cookie": f"session={secret}",
        "X-Api-Key": secret,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    body = f"password={secret}&token={secret}".encode()
    server = serve_secrets_app(tmp_path)
    try:
        answers: list[Any] = []
        # A bystander in flight while the view stalls: a victim, told in its span.
        bystander = threading.Thread(
            target=lambda: answers.append(
                fetch(server, f"/clean/?token={secret}&wait=0.5", **headers)
            )
        )
        bystander.start()
        threading.Event().wait(0.05)
        answers.append(fetch(server, f"/blocking/?token={secret}", body, **headers))
        bystander.join(REQUEST_BOUND)
        answers.append(fetch(server, f"/blocking/?token={secret}&page=2", **headers))
        events = server.wait_for(lambda found: sum(e["operation"] == "cpu" for e in found) >= 2)
        telemetry = fetch(server, "/telemetry/")
    finally:
        server.stop()
    # The secret did reach the view and its blocking calls.
    assert {"token": secret, "body": len(body)} in answers
    assert {"clean": True} in answers
    operations = {e["operation"] for e in events}
    assert {"time.sleep", "cpu"} <= operations
    assert any(e["samples"] for e in events if e["operation"] == "cpu")
    assert any(e["victims"] for e in events)
    outputs = {
        "jsonl": (tmp_path / "events.jsonl").read_text(encoding="utf-8"),
        "logging": (tmp_path / "loophound.log").read_text(encoding="utf-8"),
        "stdout and stderr": (tmp_path / "server.out").read_text(encoding="utf-8"),
        "otel": json.dumps(loophound_telemetry(telemetry)),
    }
    assert "blocked the event loop" in outputs["logging"]
    assert '"name": "blocking time.sleep"' in outputs["otel"]
    assert "loophound.blocking.incidents" in outputs["otel"]
    assert "loophound.delayed" in outputs["otel"]
    assert [name for name, text in outputs.items() if secret in text] == []
    # The check can see a secret: OpenTelemetry's own server span records the query.
    assert secret in json.dumps([s for s in telemetry["spans"] if s["scope"] != "loophound"])


# -- the demo's Prometheus exporter --------------------------------------------------------


def _address(text: str) -> str:
    """Return the address of a /proc/net/tcp{,6} field (32-bit words in host order)."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


def listening_addresses(port: int) -> list[str]:
    """Return the addresses TCP sockets listen on at ``port`` (Linux /proc/net, no psutil)."""
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(_address(address))
    return found


def outward_address() -> str | None:
    """Return an IPv4 address of this machine that is not loopback, if it has one.

    Read from the kernel's routing table (/proc/net/fib_trie): a local address is the
    line before a ``/32 host LOCAL`` line.
    """
    try:
        lines = Path("/proc/net/fib_trie").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for previous, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL":
            address = previous.strip().removeprefix("|-- ")
            if not ipaddress.ip_address(address).is_loopback:
                return address
    return None


def test_the_demo_prometheus_exporter_listens_on_loopback_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo server's Prometheus endpoint listens on 127.0.0.1 only, nowhere else."""
    monkeypatch.delenv("OTEL_EXPORTER_PROMETHEUS_HOST", raising=False)
    metrics_port = free_port()
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "LOOPHOUND_SINKS": "jsonl,otel",
    }
    port = free_port()
    server = start_server(UVICORN.command(port), port, tmp_path / "events.jsonl", env)
    refused = None
    try:
        assert get(server.url("/blocking/sleep/")) == 200
        addresses = listening_addresses(metrics_port)
        with _OPENER.open(f"http://{HOST}:{metrics_port}/metrics", timeout=REQUEST_BOUND) as r:
            scraped = r.read().decode()
        outward = outward_address()
        if outward is not None:
            try:
                socket.create_connection((outward, metrics_port), timeout=5).close()
                refused = False
            except OSError:
                refused = True
    finally:
        server.stop()
    assert addresses == ["127.0.0.1"]
    assert "loophound_blocking_incidents_total" in scraped
    assert refused in (None, True)  # None: this machine has no other address to try


class _StartedError(Exception):
    """Raised instead of starting the demo server."""


def test_loophound_demo_asks_for_loopback_metrics_whatever_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`loophound demo --otel prometheus` serves metrics on 127.0.0.1 even if told 0.0.0.0."""
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0")
    started: dict[str, Any] = {}

    def popen(command: list[str], env: dict[str, str]) -> None:
        started.update(command=command, env=env)
        raise _StartedError

    monkeypatch.setattr(loophound.cli.subprocess, "Popen", popen)
    with pytest.raises(_StartedError):
        loophound.cli.main(["demo", "--otel", "prometheus", "--out", str(tmp_path / "x.jsonl")])
    assert started["env"]["OTEL_EXPORTER_PROMETHEUS_HOST"] == "127.0.0.1"
    command = started["command"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
