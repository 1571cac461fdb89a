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
import importlib
import itertools
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from loophound._config import Config, resolve_config
from loophound._context import in_flight, request_var
from loophound._guard import Guard, active_guard, install

__all__ = ["LoophoundMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WATCHED_SCOPES = frozenset({"http", "websocket"})
_request_ids = itertools.count(1)


def _django_settings() -> Mapping[str, Any] | None:
    """Return ``settings.LOOPHOUND`` when Django is imported and configured."""
    if "django" not in sys.modules:
        return None
    adapter = importlib.import_module("loophound.django")
    settings: Mapping[str, Any] | None = adapter.loophound_settings()
    return settings


def _route_resolver() -> Callable[[str], str | None] | None:
    if "django" not in sys.modules:
        return None
    adapter = importlib.import_module("loophound.django")
    resolver: Callable[[str], str | None] | None = adapter.route_resolver()
    return resolver


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
        self._guard: Guard | None = None
        self._lock = threading.Lock()
        self._routes: Callable[[str], str | None] | None = None
        self._routes_looked_up = False

    @property
    def guard(self) -> Guard | None:
        """The guard this middleware installed or joined, once installed."""
        return self._guard

    def _ensure_installed(self) -> None:
        if self._guard is not None:
            return
        with self._lock:
            self._install_locked()

    def _install_locked(self) -> None:
        if self._guard is None:
            current = active_guard()
            if current is None:
                current = install(**self._kwargs, **_settings_kwargs(self._kwargs))
            current.watch_loop()
            self._guard = current
        if not self._routes_looked_up:
            self._routes = _route_resolver()
            self._routes_looked_up = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if kind not in _WATCHED_SCOPES:
            await self.app(scope, receive, send)
            return
        self._ensure_installed()
        request = self._describe(scope)
        waiting = in_flight.setdefault(id(asyncio.get_running_loop()), set())
        waiting.add(request["id"])
        token = request_var.set(request)
        try:
            await self.app(scope, receive, send)
        finally:
            request_var.reset(token)
            waiting.discard(request["id"])

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                self._ensure_installed()
            return message

        return wrapped

    def _describe(self, scope: Scope) -> dict[str, str]:
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
        routes = self._routes
        if routes is not None:
            try:
                route = routes(path)
            except Exception:
                route = None
            if route is not None:
                request["route"] = route
        return request


def _settings_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Return Django's ``settings.LOOPHOUND`` keys that the keyword arguments do not set."""
    settings = _django_settings() or {}
    return {key: value for key, value in settings.items() if key not in kwargs}
