"""What a detection scenario gets: local servers, a start signal, end marks.

A scenario module (``scenarios/*.py``) defines ``LABEL`` (``"blocking"`` or
``"clean"``), marks its one blocking line with a ``# culprit`` comment (blocking
scenarios only), and defines ``async def main(h)``; optionally ``prepare(h)`` (runs
before the tool is installed, with no loop: fixtures, servers, helper threads) and
``run(h)`` (runs the loop itself: uvloop, a loop in another thread). ``h`` is a
``Harness``.

Helper threads never touch a primitive on the loop: they poll ``h.started``, a plain
attribute that ``h.go()`` sets, so the only primitive the loop thread calls is the
culprit. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

#: How long the loop keeps running after the scenario's coroutine returned, so that a
#: tool that reports from another thread, or at the end of a step, has the time to.
SETTLE = 0.2
#: How long the loop has run when the scenario's coroutine starts.
WARMUP = 0.05


class Harness:
    """The scenario's side of the benchmark: fixtures in, marks out."""

    def __init__(self, scenario_file: str) -> None:
        self.file = scenario_file
        self.tmp = Path(tempfile.mkdtemp(prefix="loophound-detect-"))
        #: perf_counter_ns() when a culprit returned (``end()``).
        self.ends: list[int] = []
        #: perf_counter_ns() when a culprit began (``begin()``, optional).
        self.begins: list[int] = []
        self.started = False
        self.errors: list[str] = []
        #: Set by the child per tool: wraps each coroutine the scenario runs on a loop.
        self.enter: Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]] | None = None
        self.state: dict[str, Any] = {}

    # -- marks -----------------------------------------------------------------------

    def go(self) -> None:
        """Release the helper threads (a plain store: no primitive on the loop)."""
        self.started = True

    def begin(self) -> None:
        self.begins.append(time.perf_counter_ns())

    def end(self) -> None:
        """Note that the culprit just returned (time-to-report starts here)."""
        self.ends.append(time.perf_counter_ns())

    def wait_go(self, then: float = 0.0) -> None:
        """In a helper thread: wait for ``go()``, then ``then`` seconds more."""
        while not self.started:
            time.sleep(0.0005)
        if then:
            time.sleep(then)

    def thread(self, target: Callable[[], Any]) -> threading.Thread:
        """Start a daemon helper thread (in ``prepare``)."""
        thread = threading.Thread(target=target, daemon=True, name="scenario-helper")
        thread.start()
        return thread

    # -- running ---------------------------------------------------------------------

    async def watch(self, coro: Coroutine[Any, Any, Any], warmup: float = WARMUP) -> None:
        """Run one scenario coroutine under the tool, then let the loop run on a bit.

        The loop has run ``warmup`` seconds when the scenario's coroutine starts, as
        in a service whose loop has been up for a while (``warmup=0``: the scenario
        runs in the loop's first step, as a test's coroutine does).
        """
        try:
            if self.enter is not None:
                await self.enter(self._settled(coro, warmup))
            else:
                await self._settled(coro, warmup)
        except Exception as exc:  # a tool that raises (blockbuster) ends the scenario
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _settled(self, coro: Coroutine[Any, Any, Any], warmup: float) -> None:
        try:
            if warmup:
                await asyncio.sleep(warmup)
            await coro
        finally:
            await asyncio.sleep(SETTLE)

    def run(self, main: Callable[[Harness], Coroutine[Any, Any, Any]]) -> None:
        """The default: ``asyncio.run`` on the main thread."""
        asyncio.run(self.watch(main(self)))

    # -- fixtures --------------------------------------------------------------------

    def serve(self, handler: Callable[[socket.socket], Any]) -> int:
        """Accept connections on 127.0.0.1 in a daemon thread; return the port.

        Each connection is handed to ``handler`` in a thread of its own.
        """
        listener = socket.create_server(("127.0.0.1", 0))

        def accept() -> None:
            while True:
                conn, _ = listener.accept()
                self.thread(lambda conn=conn: _handle(handler, conn))

        self.thread(accept)
        return int(listener.getsockname()[1])

    def http_server(self, delay: float = 0.0, body: bytes = b"hello") -> int:
        """A local HTTP server that answers every GET after ``delay`` seconds."""

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if delay:
                    time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.thread(server.serve_forever)
        return int(server.server_address[1])

    def files(self, count: int, size: int = 64, sub: str = "tree") -> Path:
        """A directory of ``count`` small files (in two levels); returns it."""
        root = self.tmp / sub
        for i in range(count):
            folder = root / f"d{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i}.txt").write_bytes(b"x" * size)
        return root

    def big_file(self, size: int, name: str = "big.bin") -> Path:
        path = self.tmp / name
        path.write_bytes(os.urandom(size))
        return path


def _handle(handler: Callable[[socket.socket], Any], conn: socket.socket) -> None:
    with contextlib.suppress(OSError), conn:
        handler(conn)


def calibrate(
    work: Callable[[Any], Any],
    seconds: float,
    start: int = 1000,
    make: Callable[[int], Any] = lambda n: n,
) -> int:
    """Return n such that ``work(make(n))`` takes about ``seconds`` here (off the loop).

    Only ``work`` is timed; ``make`` builds its input. Scaled from a run of at least
    50 ms, then checked once and corrected.
    """
    n = start
    while True:
        arg = make(n)
        began = time.perf_counter()
        work(arg)
        took = time.perf_counter() - began
        if took >= 0.05:
            break
        n *= 4
    n = max(1, int(n * seconds / took))
    arg = make(n)
    began = time.perf_counter()
    work(arg)
    took = time.perf_counter() - began
    return max(1, int(n * seconds / took))
