"""Helpers the tests import: run a coroutine under a capture, find lines and events."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import loophound
from loophound import Event

#: Upper bound of a wait that is expected to succeed.
BOUND = 5.0


def primitives_now() -> dict[str, object]:
    """Return the objects some patched names point at right now (to prove restoration)."""
    return {
        "time.sleep": time.sleep,
        "socket.socket.recv": socket.socket.recv,
        "threading.Event.wait": threading.Event.wait,
        "select.select": select.select,
        "os.read": os.read,
    }


def run_captured(main: Callable[[], Coroutine[Any, Any, Any]], **config: Any) -> list[Event]:
    """Run ``main()`` with ``asyncio.run`` inside ``loophound.capture(**config)``."""
    config.setdefault("sinks", ())
    with loophound.capture(**config) as events:
        asyncio.run(main())
    return list(events)


def run_captured_in_thread(
    main: Callable[[], Coroutine[Any, Any, Any]], name: str, **config: Any
) -> list[Event]:
    """Run ``main()`` with ``asyncio.run`` in a new thread named ``name``, under a capture."""
    config.setdefault("sinks", ())
    errors: list[BaseException] = []

    def run_loop() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported below, never lost in the thread
            errors.append(exc)

    with loophound.capture(**config) as events:
        worker = threading.Thread(target=run_loop, name=name)
        worker.start()
        worker.join(BOUND)
    assert not worker.is_alive()
    assert errors == []
    return list(events)


def line_of(marker: str, path: str) -> int:
    """Return the line number in ``path`` of the line that contains ``marker``."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if marker in line and "line_of(" not in line:
                return number
    raise AssertionError(f"{marker!r} not found in {path}")


def loud(events: list[Event]) -> list[Event]:
    """Return the events that are not quiet (module loads are quiet)."""
    return [e for e in events if not e.quiet]


def one_loud_event(events: list[Event], operation: str, marker: str, path: str) -> Event:
    """Assert one loud event for ``operation`` at ``marker``'s line in ``path``; return it."""
    found = loud(events)
    assert [e.operation for e in found] == [operation], found
    event = found[0]
    assert event.culprit is not None
    assert event.culprit.filename == path
    assert event.culprit.lineno == line_of(marker, path)
    return event


def one_patched_event(events: list[Event], operation: str, marker: str, path: str) -> Event:
    """Assert one loud patch-detector event for ``operation`` at ``marker``'s line in ``path``."""
    event = one_loud_event(events, operation, marker, path)
    assert event.detectors == ("patches",)
    return event


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and ``ok``."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Stay silent."""


@contextlib.contextmanager
def http_server() -> Iterator[int]:
    """Serve on 127.0.0.1 in a thread for the block; yield the port."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    server.timeout = 5
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        assert not thread.is_alive()
