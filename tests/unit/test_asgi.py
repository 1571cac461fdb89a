"""The ASGI middleware: pure ASGI 3 behaviour and the request context of events."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest

import loophound
from loophound.asgi import LoophoundMiddleware


async def ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that blocks the loop for 20 ms and answers 200."""
    if scope["type"] == "http":
        time.sleep(0.02)  # asgi-sleep
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Call an ASGI app with one empty request body; return what it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(path: str = "/items/3/", query: bytes = b"token=secret") -> dict[str, Any]:
    """Return a minimal HTTP scope."""
    return {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": []}


def test_a_bad_setting_fails_at_construction() -> None:
    """A bad middleware setting raises ConfigurationError when the app is built, not later."""
    with pytest.raises(loophound.ConfigurationError, match="threshold"):
        LoophoundMiddleware(ok_app, threshold="soon")
    assert loophound.active_guard() is None


def test_events_carry_the_request_without_its_query_string() -> None:
    """A blocking call in a request names method and path, never the query string."""
    app = LoophoundMiddleware(ok_app, sinks=())

    async def main() -> list[dict[str, Any]]:
        return await call(app, http_scope())

    with loophound.capture(sinks=()) as events:
        sent = asyncio.run(main())
        assert app.guard is loophound.active_guard()
    assert sent[0]["status"] == 200
    sleeps = [e for e in events if e.operation == "time.sleep"]
    assert len(sleeps) == 1
    request = sleeps[0].request
    assert request is not None
    assert request["method"] == "GET"
    assert request["path"] == "/items/3/"
    assert "secret" not in repr(request)


def test_the_middleware_joins_an_installed_guard_and_leaves_it_installed() -> None:
    """With a guard already installed, the middleware uses it instead of installing another."""
    app = LoophoundMiddleware(ok_app)
    with loophound.capture(sinks=()) as events:
        asyncio.run(call(app, http_scope()))
        assert app.guard is events.guard
    assert loophound.active_guard() is None


def test_events_outside_requests_have_no_request() -> None:
    """A blocking call made outside any request carries request None."""

    async def main() -> None:
        time.sleep(0.01)

    with loophound.capture(sinks=()) as events:
        asyncio.run(main())
    assert [e.request for e in events if e.operation == "time.sleep"] == [None]


def test_lifespan_passes_through_and_installs_at_startup() -> None:
    """Lifespan messages reach the app untouched, and startup installs the guard."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        message = await receive()
        seen.append(message["type"])
        await send({"type": "lifespan.startup.complete"})

    middleware = LoophoundMiddleware(app, sinks=())

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.startup"}

        async def send(message: dict[str, Any]) -> None:
            seen.append(message["type"])

        await middleware({"type": "lifespan"}, receive, send)

    try:
        asyncio.run(main())
        assert seen == ["lifespan.startup", "lifespan.startup.complete"]
        assert middleware.guard is not None
        assert middleware.guard.installed
    finally:
        if middleware.guard is not None:
            middleware.guard.uninstall()


def test_exceptions_of_the_app_are_re_raised() -> None:
    """An exception raised by the wrapped app reaches the server unchanged."""

    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise LookupError("boom")

    app = LoophoundMiddleware(failing)
    with loophound.capture(sinks=()), pytest.raises(LookupError, match="boom"):
        asyncio.run(call(app, http_scope()))


def test_other_scope_types_pass_through_untouched() -> None:
    """A scope type the middleware does not watch is handed to the app as it is."""
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)

    middleware = LoophoundMiddleware(app, sinks=())
    scope = {"type": "custom", "x": 1}
    asyncio.run(call(middleware, scope))
    assert scopes == [scope]
    assert middleware.guard is None


def test_importing_the_middleware_loads_no_django_or_opentelemetry() -> None:
    """`import loophound.asgi` imports neither Django nor OpenTelemetry nor pytest."""
    code = (
        "import sys, loophound.asgi; "
        "print(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'django', 'opentelemetry', 'pytest', 'asgiref'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
