"""Four clean views (nothing in them blocks the loop) and the probe the runner checks.

The template is compiled and rendered once before the server starts (``asgi.py``):
rendering it in the async view then reads no file (the first render of a number looks
for the language's format files, once).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

import loophound
from loadsite.models import ITEMS, Item

TEMPLATE = "loadsite/items.html"


async def async_json(_request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True, "items": list(ITEMS), "sizes": [3, 1, 4, 1, 5]})


async def async_orm(_request: HttpRequest) -> HttpResponse:
    count = await Item.objects.acount()
    names = [item.name async for item in Item.objects.order_by("id")]
    return JsonResponse({"count": count, "names": names})


CONTEXT = {"title": "items", "items": ITEMS, "note": "in stock"}


async def async_template(request: HttpRequest) -> HttpResponse:
    return render(request, TEMPLATE, CONTEXT)


def sync_json(_request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True, "thread": "sync", "items": list(ITEMS)})


async def probe(_request: HttpRequest) -> HttpResponse:
    """What is active in this server: the runner checks it against the variant."""
    from loadsite import asgi  # loaded by now: no file is read

    loop = asyncio.get_running_loop()
    guard = loophound.active_guard()
    facts = {
        "variant": asgi.VARIANT,
        "loop": f"{type(loop).__module__}.{type(loop).__name__}",
        "debug": loop.get_debug(),
        "loophound": None
        if guard is None
        else {
            "detectors": list(guard.config.detectors),
            "sinks": list(guard.config.output_sinks()),
            "stats": guard.stats.as_dict(),
        },
        "handle_run": asyncio.events.Handle._run.__module__,
        "time_sleep": getattr(time.sleep, "__module__", None),
        "threads": {t.name: t.native_id for t in threading.enumerate()},
        "tracer_provider": type(asgi.tracer_provider()).__name__,
        "spans_exported": asgi.spans_exported(),
        "pyleak": asgi.pyleak_monitoring(),
        "python": sys.version.split()[0],
    }
    return JsonResponse(facts)
