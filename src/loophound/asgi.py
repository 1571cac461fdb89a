"""``LoophoundMiddleware``: one line in ``asgi.py`` ties every incident to its request.

    from django.core.asgi import get_asgi_application
    from loophound.asgi import LoophoundMiddleware
    application = LoophoundMiddleware(get_asgi_application())

Pure ASGI 3: per-request state lives in locals, ``lifespan`` passes through untouched,
exceptions are always re-raised. The configuration is validated in ``__init__`` (a bad
setting stops the server from starting); the guard is installed once per process, at
lifespan startup or at the first request, on the loop that serves requests. This
module imports neither Django nor OpenTelemetry: the Django adapter is loaded by name,
only when Django is already imported and configured.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import importlib.util
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from loophound._config import Config, resolve_config
from loophound._context import (
    allow_blocking,
    in_flight,
    request_holders,
    request_var,
    tracing,
)
from loophound._events import RequestRecord
from loophound._guard import Guard, active_guard, install

__all__ = ["LoophoundMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WATCHED_SCOPES = frozenset({"http", "websocket"})
_request_ids = itertools.count(1)
_install_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _install_lock
    # A thread of the parent may have held it at the fork.
    _install_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _django_settings() -> Mapping[str, Any] | None:
    """Return ``settings.LOOPHOUND`` when Django is imported and configured."""
    if "django" not in sys.modules:
        return None
    adapter = importlib.import_module("loophound.django")
    settings: Mapping[str, Any] | None = adapter.loophound_settings()
    return settings


class _Adapters:
    """What the optional packages add to each request, loaded once per process.

    Loaded by name, and only when the package is there: Django's route templates,
    asgiref's thread hops, OpenTelemetry's span ids. Loaded in an allow scope, so
    that their imports are never incidents, even under a guard installed earlier.
    """

    def __init__(self) -> None:
        self.routes: Callable[[str], str | None] | None = None
        self.span_ids: Callable[[], tuple[str, str] | None] | None = None
        self.request_span: Callable[[], object | None] | None = None
        self.describe: Callable[[object, RequestRecord], None] | None = None
        self.hops: contextvars.ContextVar[Any] | None = None
        self.new_hops: Callable[[], Any] | None = None
        self._install_hops: Callable[[], bool] | None = None
        if "django" in sys.modules:
            self.routes = importlib.import_module("loophound.django").route_resolver()
        if "asgiref.sync" in sys.modules:
            thread_hops = importlib.import_module("loophound.thread_hops")
            self.hops = thread_hops.hops_var
            self.new_hops = thread_hops.ThreadHops
            self._install_hops = thread_hops.install
        if importlib.util.find_spec("opentelemetry") is not None:
            try:
                otel = importlib.import_module("loophound.otel_context")
            except ImportError:  # an opentelemetry package without the API
                otel = None
            if otel is not None:
                self.span_ids = otel.current_span_ids
                self.request_span = otel.recording_span
                self.describe = otel.describe_request

    def hops_factory(self) -> Callable[[], Any] | None:
        """Return what makes a request's hops, patching asgiref the first time it is asked.

        Not at load: the patch makes every ``sync_to_async`` call bind through a Python
        descriptor, a cost for nothing while no sink and no span takes the hops. None
        when asgiref cannot be patched. Read once by the caller: another thread may be
        installing right now (its hops are then counted from the next request on).
        """
        install = self._install_hops
        if install is not None:
            self._install_hops = None
            try:
                with allow_blocking("loophound patches asgiref"):
                    ready = install()
            except Exception:
                ready = False
            if not ready:
                self.hops = self.new_hops = None
        return self.new_hops


class LoophoundMiddleware:
    """Wraps any ASGI 3 application (Django, Starlette, a bare callable).

    Keyword arguments are loophound settings (see the README); they win over Django's
    ``settings.LOOPHOUND``, which wins over ``LOOPHOUND_*`` environment variables.
    """

    def __init__(self, app: ASGIApp, **config: Any) -> None:
        self.app = app
        self._kwargs = config
        # Validate now, so a bad setting stops the server instead of failing a request.
        self.config: Config = resolve_config(config, settings=_django_settings())
        if self.config.async_unsafe != "raise" and "django" in sys.modules:
            importlib.import_module("loophound.django_db").check_async_unsafe(
                self.config.async_unsafe
            )
        self._guard: Guard | None = None
        #: The process the guard was installed or joined in: a forked worker joins anew.
        self._pid = 0
        self._adapters: _Adapters | None = None
        #: (loop, pid, its ``in_flight`` set) of the latest request (``_in_flight_here``).
        self._loop_cache: tuple[weakref.ref[asyncio.AbstractEventLoop], int, set[str]] | None = None

    @property
    def guard(self) -> Guard | None:
        """The guard this middleware installed or joined, once installed."""
        return self._guard

    def _ensure_installed(self) -> _Adapters:
        adapters = self._adapters
        if adapters is not None and self._pid == os.getpid():
            return adapters
        with _install_lock:
            return self._install_locked()

    def _install_locked(self) -> _Adapters:
        pid = os.getpid()
        if self._adapters is None:
            # A guard may already be installed (gunicorn --preload, an install() at
            # import time): loophound's own imports are not the user's incidents.
            with allow_blocking("loophound loads its adapters"):
                self._adapters = _Adapters()
        if self._guard is None or self._pid != pid or not self._guard.installed:
            current = active_guard()
            if current is None:
                current = install(**self._kwargs, **_settings_kwargs(self._kwargs))
            current.watch_loop()
            self._guard = current
            self._pid = pid
        return self._adapters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if kind not in _WATCHED_SCOPES:
            await self.app(scope, receive, send)
            return
        adapters = self._ensure_installed()
        request = self._describe(scope, adapters)
        request_id = request["id"]
        waiting = self._in_flight_here()
        waiting.add(request_id)
        token = request_var.set(request)
        span = None
        if tracing() and adapters.request_span is not None:
            # The otel sink tells this request when a stall delays it: by its span if
            # one is active here, else through its task's context at that time.
            span = adapters.request_span()
            request_holders[request_id] = span if span is not None else asyncio.current_task()
        hops_var = adapters.hops
        hops = hops_token = None
        # Timing hops costs every request CPU: only when a sink or the span takes them.
        records = hops_var is not None and self._records_wanted()
        described = span is not None and adapters.describe is not None
        new_hops = (
            adapters.hops_factory() if hops_var is not None and (records or described) else None
        )
        if new_hops is not None and hops_var is not None:
            hops = new_hops()
            hops_token = hops_var.set(hops)
        started_at = time.time_ns()
        began = time.perf_counter()
        try:
            await self.app(scope, receive, self._sender(send, waiting, request_id))
        finally:
            request_var.reset(token)
            waiting.discard(request_id)
            request_holders.pop(request_id, None)
            if hops_var is not None and hops_token is not None:
                hops_var.reset(hops_token)
            if hops is not None and hops.count:
                took = time.perf_counter() - began
                self._record(request, started_at, took, hops, span if described else None, records)

    def _in_flight_here(self) -> set[str]:
        """Return the set of request ids in flight on the running loop (``in_flight``).

        Kept for the loop the last request ran on: ``id()`` raises an audit event (a
        call into every audit hook, loophound's too), and servers run one loop.
        """
        loop = asyncio.get_running_loop()
        # One tuple, read and written whole: loops in other threads share the middleware.
        cached = self._loop_cache
        if cached is not None and cached[0]() is loop and cached[1] == self._pid:
            return cached[2]
        waiting = in_flight.setdefault(id(loop), set())
        try:
            # A weak reference: the middleware must not keep an ended loop alive.
            self._loop_cache = (weakref.ref(loop), self._pid, waiting)
        except TypeError:  # a loop that cannot be weakly referenced: looked up each time
            pass
        return waiting

    def _records_wanted(self) -> bool:
        """Whether a sink takes request records now (the jsonl file, DEBUG logging)."""
        guard = self._guard
        try:
            return guard is not None and guard.wants_requests()
        except Exception:
            return False

    def _record(
        self,
        request: dict[str, str],
        started_at: int,
        took: float,
        hops: Any,
        span: object,
        to_sinks: bool,
    ) -> None:
        guard = self._guard
        if guard is None:
            return
        try:
            record = RequestRecord(
                request, started_at, took, hops.count, hops.wait, hops.run, self._pid
            )
            if to_sinks:  # else only the span takes it: no thread is woken
                guard.record_request(record)
            adapters = self._adapters
            if span is not None and adapters is not None and adapters.describe is not None:
                adapters.describe(span, record)
        except Exception:  # the request is served whatever loophound does
            return

    @staticmethod
    def _sender(send: Send, waiting: set[str], request_id: str) -> Send:
        """Return ``send`` that ends the request's wait once its response is out.

        Django still runs the response's ``close()`` in a thread after the last body
        message; a stall then no longer delays that request's client.
        """

        async def sent(message: Message) -> None:
            await send(message)
            kind = message.get("type")
            if (kind == "http.response.body" and not message.get("more_body")) or (
                kind == "websocket.close"
            ):
                waiting.discard(request_id)

        return sent

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                self._ensure_installed()
            return message

        return wrapped

    def _describe(self, scope: Scope, adapters: _Adapters) -> dict[str, str]:
        # The query string, headers and body are never recorded.
        path = str(scope.get("path", ""))
        request = {
            "id": str(next(_request_ids)),
            "type": str(scope.get("type", "")),
            "method": str(
                scope.get("method", "WEBSOCKET" if scope.get("type") == "websocket" else "")
            ),
            "path": path,
        }
        routes = adapters.routes
        if routes is not None:
            try:
                route = routes(path)
            except Exception:
                route = None
            if route is not None:
                request["route"] = route
        span_ids = adapters.span_ids
        if span_ids is not None:
            try:
                ids = span_ids()
            except Exception:
                ids = None
            if ids is not None:
                request["trace_id"], request["span_id"] = ids
        return request


def _settings_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Return Django's ``settings.LOOPHOUND`` keys that the keyword arguments do not set."""
    settings = _django_settings() or {}
    return {key: value for key, value in settings.items() if key not in kwargs}
