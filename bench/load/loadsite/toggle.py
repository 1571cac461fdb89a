"""The load site with loophound switched on and off at run time (``bench/load/toggle.py``).

``LOAD_VARIANT`` is ``loophound`` (Django alone, or ``LoophoundMiddleware`` around it,
every detector) or ``otel+loophound`` (the same inside OpenTelemetry's ASGI middleware,
loophound with its ``otel`` sink), each set up as ``loadsite.asgi`` sets up that
variant. SIGUSR1 switches loophound on and SIGUSR2 off, on the loop
(``loop.add_signal_handler``, set at the first request): on makes a new middleware and
installs its guard before the next request, as a fresh server would at its first
request; off uninstalls the guard; the requests that follow take the other
application. Two things stay while off, because they cannot be taken back: the audit
hook (``sys.addaudithook``; it returns at its first check) and the descriptor on
asgiref's ``SyncToAsync.thread_handler`` (it returns the plain handler when no request
of loophound's is being served).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from typing import Any

WANTED = os.environ.get("LOAD_VARIANT", "loophound")
if WANTED not in ("loophound", "otel+loophound"):
    raise SystemExit(f"LOAD_VARIANT={WANTED!r}: one of loophound, otel+loophound")
# The set-up of the variant without loophound: Django, and OTel's SDK for otel.
os.environ["LOAD_VARIANT"] = "otel" if WANTED == "otel+loophound" else "baseline"

import loophound  # noqa: E402
from loadsite import asgi  # noqa: E402 - after LOAD_VARIANT, which it reads
from loophound.asgi import LoophoundMiddleware  # noqa: E402

off_app: Any = asgi.application


def _on_app() -> tuple[LoophoundMiddleware, Any]:
    """A new middleware, as a fresh server has: it installs its guard at its first use."""
    if WANTED == "otel+loophound":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        settings = {"threshold": asgi.THRESHOLD, "sinks": ("warnings", "logging", "otel")}
        middleware = LoophoundMiddleware(
            asgi.django_application, **{**settings, **asgi.LOOPHOUND_EXTRA}
        )
        return middleware, OpenTelemetryMiddleware(middleware)
    middleware = LoophoundMiddleware(
        asgi.django_application, threshold=asgi.THRESHOLD, **asgi.LOOPHOUND_EXTRA
    )
    return middleware, middleware


_state: dict[str, Any] = {"app": off_app, "handlers": False}


def _switch(*, on: bool) -> None:
    """Switch loophound on or off (a loop callback: between two requests' steps)."""
    guard = loophound.active_guard()
    if guard is not None:
        guard.uninstall()
    if on:
        middleware, app = _on_app()
        middleware._ensure_installed()  # the guard is in place before the next request
        _state["app"] = app
    else:
        _state["app"] = off_app


async def application(scope: Any, receive: Any, send: Any) -> None:
    if not _state["handlers"]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, functools.partial(_switch, on=True))
        loop.add_signal_handler(signal.SIGUSR2, functools.partial(_switch, on=False))
        _state["handlers"] = True
    await _state["app"](scope, receive, send)
