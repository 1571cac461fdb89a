"""Thread hops: asgiref's sync_to_async inside a request, counted and timed per request.

The middleware is driven directly (no server): each test calls it with an HTTP scope
on its own loop and reads the request records the guard delivered to a sink.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, sync_to_async

import loophound
from helpers import BOUND, loud
from loophound import thread_hops
from loophound._events import Event, RequestRecord
from loophound.asgi import LoophoundMiddleware

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class RequestSink:
    """Keeps the request records (and the incidents) the guard delivers."""

    name = "requests"

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.events: list[Event] = []

    def deliver(self, event: Event) -> None:
        """Keep an incident."""
        self.events.append(event)

    def deliver_request(self, record: RequestRecord) -> None:
        """Keep a served request."""
        self.records.append(record)

    def close(self) -> None:
        """Nothing to release."""

    def by_path(self) -> dict[str, RequestRecord]:
        """Return the records by request path."""
        return {record.request["path"]: record for record in self.records}


@pytest.fixture(autouse=True)
def _asgiref_restored() -> Iterator[None]:
    """Each test starts and ends with asgiref's own SyncToAsync (earlier middlewares patched it)."""
    thread_hops.uninstall()
    call = vars(SyncToAsync)["__call__"]
    handler = vars(SyncToAsync)["thread_handler"]
    yield
    thread_hops.uninstall()
    assert vars(SyncToAsync)["__call__"] is call
    assert vars(SyncToAsync)["thread_handler"] is handler


def scope(path: str) -> dict[str, Any]:
    """Return a minimal HTTP scope for ``path``."""
    return {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}


async def call(app: Any, path: str) -> None:
    """Call an ASGI app once with an empty request body."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope(path), receive, send)


async def respond(send: Any) -> None:
    """Send an empty 200 response."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def requests() -> Iterator[tuple[loophound.Guard, RequestSink]]:
    """An installed guard (the middleware joins it) with a sink that keeps request records."""
    guard = loophound.install(sinks=())
    sink = RequestSink()
    guard.add_sink(sink)
    try:
        yield guard, sink
    finally:
        guard.uninstall()


def serve(app: App, *paths: str) -> LoophoundMiddleware:
    """Serve ``paths`` one after the other through ``LoophoundMiddleware(app)`` on a new loop."""
    middleware = LoophoundMiddleware(app)

    async def main() -> None:
        for path in paths:
            await call(middleware, path)

    asyncio.run(main())
    return middleware


def test_each_sync_to_async_call_in_a_request_is_one_hop(
    requests: tuple[loophound.Guard, RequestSink],
) -> None:
    """Three sync_to_async calls in one request make one record with a hop count of three."""
    guard, sink = requests

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for _ in range(3):
            await sync_to_async(time.sleep)(0.001)
        await respond(send)

    middleware = serve(app, "/three/")
    assert middleware.guard is guard  # joined the installed guard
    assert guard.flush(BOUND)
    assert len(sink.records) == 1
    record = sink.records[0]
    assert record.hops == 3
    assert record.request["path"] == "/three/"
    assert record.request["method"] == "GET"
    assert record.pid == os.getpid()
    assert loud(sink.events) == []  # sleeping in asgiref's thread blocks no loop


def test_hops_gathered_on_several_threads_are_all_counted(
    requests: tuple[loophound.Guard, RequestSink],
) -> None:
    """Eight non-thread-sensitive hops gathered at once in one request count eight, none lost."""
    guard, sink = requests

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        hop = sync_to_async(time.sleep, thread_sensitive=False)
        await asyncio.gather(*(hop(0.005) for _ in range(8)))
        await respond(send)

    serve(app, "/gathered/")
    assert guard.flush(BOUND)
    assert [record.hops for record in sink.records] == [8]
    assert sink.records[0].hop_run >= 8 * 0.005 * 0.9


def test_a_hop_runs_at_least_as_long_as_its_function(
    requests: tuple[loophound.Guard, RequestSink],
) -> None:
    """A sync function sleeping 50 ms is a hop whose run time covers the time it measured."""
    guard, sink = requests
    measured: list[float] = []

    def slow() -> None:
        began = time.perf_counter()
        time.sleep(0.05)
        measured.append(time.perf_counter() - began)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await sync_to_async(slow)()
        await respond(send)

    serve(app, "/slow/")
    assert guard.flush(BOUND)
    (record,) = sink.records
    assert record.hops == 1
    assert record.hop_run >= measured[0] >= 0.05
    assert record.hop_wait >= 0.0
    assert record.duration >= record.hop_wait + record.hop_run


def test_a_concurrent_hop_waits_for_the_thread_sensitive_thread(
    requests: tuple[loophound.Guard, RequestSink],
) -> None:
    """A second request's hop waits while the first one's holds asgiref's single thread."""
    guard, sink = requests
    go = threading.Event()
    first_submitted = asyncio.Event()
    second_submitted = asyncio.Event()
    held: list[float] = []
    times: dict[str, float] = {}

    def hold() -> None:
        began = time.perf_counter()
        assert go.wait(BOUND)
        held.append(time.perf_counter() - began)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Nothing between set() and the hop's submission yields to the loop, so once
        # the test sees the flag the hop is queued on the executor.
        if scope["path"] == "/first/":
            first_submitted.set()
            await sync_to_async(hold)()
        else:
            second_submitted.set()
            await sync_to_async(time.sleep)(0)
        await respond(send)

    async def main() -> None:
        middleware = LoophoundMiddleware(app)
        first = asyncio.create_task(call(middleware, "/first/"))
        await asyncio.wait_for(first_submitted.wait(), BOUND)
        second = asyncio.create_task(call(middleware, "/second/"))
        await asyncio.wait_for(second_submitted.wait(), BOUND)
        times["seen"] = time.perf_counter()
        await asyncio.sleep(0.05)
        times["released"] = time.perf_counter()
        go.set()
        await asyncio.wait_for(asyncio.gather(first, second), BOUND)

    asyncio.run(main())
    assert guard.flush(BOUND)
    records = sink.by_path()
    assert set(records) == {"/first/", "/second/"}
    first, second = records["/first/"], records["/second/"]
    assert first.hops == second.hops == 1
    # The second hop was queued before "seen" and could start only after "released".
    assert second.hop_wait >= times["released"] - times["seen"] > 0
    assert first.hop_run >= held[0]


def test_a_request_without_hops_writes_no_record(
    requests: tuple[loophound.Guard, RequestSink],
) -> None:
    """A request that never calls sync_to_async leaves no request record; one that does, does."""
    guard, sink = requests

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/hop/":
            await sync_to_async(time.sleep)(0)
        await respond(send)

    serve(app, "/plain/", "/hop/", "/plain/")
    assert guard.flush(BOUND)
    assert [record.request["path"] for record in sink.records] == ["/hop/"]


def test_a_hop_that_raises_is_still_counted(
    requests: tuple[loophound.Guard, RequestSink],
) -> None:
    """A sync function that raises is a hop that ran, and its exception reaches the caller."""
    guard, sink = requests
    caught: list[BaseException] = []

    def fail() -> None:
        raise ValueError("from the thread")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await sync_to_async(fail)()
        except ValueError as exc:
            caught.append(exc)
        await respond(send)

    serve(app, "/fails/")
    assert guard.flush(BOUND)
    assert [str(exc) for exc in caught] == ["from the thread"]
    (record,) = sink.records
    assert record.hops == 1


def test_sync_to_async_outside_a_request_is_untouched(
    requests: tuple[loophound.Guard, RequestSink],
) -> None:
    """Once patched, sync_to_async outside a served request returns as usual and records nothing."""
    guard, sink = requests

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await sync_to_async(time.sleep)(0)
        await respond(send)

    serve(app, "/installs-the-patch/")
    assert thread_hops.hops_var.get() is None
    assert vars(SyncToAsync)["thread_handler"] is not thread_hops._installed[0][2]  # patched now

    async def outside() -> int:
        bound = SyncToAsync(lambda: 0).thread_handler
        assert getattr(bound, "__func__", None) is thread_hops._installed[0][2]  # the original
        return await sync_to_async(threading.get_ident)()

    ident = asyncio.run(outside())
    assert ident != threading.get_ident()
    assert guard.flush(BOUND)
    assert [record.request["path"] for record in sink.records] == ["/installs-the-patch/"]


def test_the_jsonl_log_has_one_request_line_with_its_thread_hops(tmp_path: Path) -> None:
    """A hopping request is one JSON line of kind request with thread_hops count, wait and run."""
    log = tmp_path / "events.jsonl"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await sync_to_async(time.sleep)(0.01)
        await sync_to_async(time.sleep)(0.01)
        await respond(send)

    middleware = LoophoundMiddleware(app, sinks=(), jsonl=str(log))

    async def main() -> None:
        await call(middleware, "/logged/")

    try:
        asyncio.run(main())
    finally:
        assert middleware.guard is not None  # installed by the middleware at the request
        middleware.guard.uninstall()
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    requests = [line for line in lines if line["kind"] == "request"]
    assert len(requests) == 1, lines
    (record,) = requests
    assert set(record) == {
        "schema",
        "kind",
        "request",
        "started_at",
        "duration",
        "thread_hops",
        "pid",
    }
    assert record["schema"] == 1
    assert record["pid"] == os.getpid()
    assert record["request"]["path"] == "/logged/"
    assert record["request"]["method"] == "GET"
    assert isinstance(record["started_at"], int)
    hops = record["thread_hops"]
    assert set(hops) == {"count", "wait", "run"}
    assert hops["count"] == 2
    assert hops["run"] >= 0.02
    assert hops["wait"] >= 0.0
    assert record["duration"] >= hops["run"] + hops["wait"]


def test_the_logging_sink_logs_requests_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    """The logging sink writes a hopping request as one DEBUG record, and nothing above DEBUG."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await sync_to_async(time.sleep)(0)
        await respond(send)

    def served(level: int, path: str) -> list[logging.LogRecord]:
        caplog.clear()
        caplog.set_level(level, logger="loophound")
        middleware = LoophoundMiddleware(app, sinks=("logging",))

        async def main() -> None:
            await call(middleware, path)

        try:
            asyncio.run(main())
        finally:
            assert middleware.guard is not None
            middleware.guard.uninstall()
        return [r for r in caplog.records if hasattr(r, "loophound_request")]

    debug = served(logging.DEBUG, "/debug/")
    assert len(debug) == 1
    assert debug[0].levelno == logging.DEBUG
    assert debug[0].loophound_request.request["path"] == "/debug/"
    assert "1 thread hop waited" in debug[0].getMessage()
    assert served(logging.INFO, "/info/") == []


@pytest.mark.parametrize(
    ("sinks", "level", "timed"),
    [
        (("warnings", "logging"), logging.INFO, False),
        (("warnings", "logging"), logging.DEBUG, True),
        ((), logging.DEBUG, False),
    ],
)
def test_hops_are_timed_only_when_a_sink_takes_requests(
    sinks: tuple[str, ...], level: int, timed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A request's hops are timed only while a sink would take its record (DEBUG logging here)."""
    seen: list[object] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(thread_hops.hops_var.get())
        await sync_to_async(time.sleep)(0)
        await respond(send)

    caplog.set_level(level, logger="loophound")
    middleware = LoophoundMiddleware(app, sinks=sinks)
    try:
        asyncio.run(call(middleware, "/hop/"))
    finally:
        assert middleware.guard is not None
        middleware.guard.uninstall()
    assert len(seen) == 1
    assert (seen[0] is not None) is timed


def test_asgiref_stays_unpatched_until_a_request_wants_its_hops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SyncToAsync keeps asgiref's own thread_handler until a sink first takes request records."""
    original = vars(SyncToAsync)["thread_handler"]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await sync_to_async(time.sleep)(0)
        await respond(send)

    caplog.set_level(logging.INFO, logger="loophound")
    middleware = LoophoundMiddleware(app, sinks=("logging",))
    try:
        asyncio.run(call(middleware, "/quiet/"))
        assert vars(SyncToAsync)["thread_handler"] is original
        caplog.set_level(logging.DEBUG, logger="loophound")
        asyncio.run(call(middleware, "/recorded/"))
        assert vars(SyncToAsync)["thread_handler"] is not original
    finally:
        assert middleware.guard is not None
        middleware.guard.uninstall()
