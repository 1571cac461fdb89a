"""Views that block the event loop, and views that do the same work without blocking."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from loophound.demo.models import Item


def _spin(seconds: float) -> int:
    """Burn CPU in pure Python for ``seconds``."""
    end = time.perf_counter() + seconds
    rounds = 0
    while time.perf_counter() < end:
        rounds += 1
    return rounds


# --- views that block the loop -------------------------------------------------------


async def blocking_sleep(request: HttpRequest) -> JsonResponse:
    """Sleeps on the event loop: every other request waits too."""
    time.sleep(0.2)
    return JsonResponse({"slept": 0.2})


async def blocking_file(request: HttpRequest) -> JsonResponse:
    """Reads a file with open() on the event loop."""
    with open(settings.DATABASES["default"]["NAME"] + ".notes", "a+", encoding="utf-8") as f:
        f.write("visited\n")
    return JsonResponse({"wrote": True})


async def blocking_cpu(request: HttpRequest) -> JsonResponse:
    """Computes for 200 ms in a coroutine."""
    return JsonResponse({"rounds": _spin(0.2)})


async def blocking_json(request: HttpRequest) -> JsonResponse:
    """Parses a large JSON document on the loop (C code that holds the GIL)."""
    document = json.dumps([list(range(100))] * 30_000)
    return JsonResponse({"items": len(json.loads(document))})


async def blocking_subprocess(request: HttpRequest) -> JsonResponse:
    """Runs a program with subprocess.run on the loop."""
    done = subprocess.run(["true"], check=False)
    return JsonResponse({"returncode": done.returncode})


async def blocking_item(request: HttpRequest, pk: int) -> JsonResponse:
    """Queries sqlite with the blocking driver from async code."""
    with sqlite3.connect(settings.DATABASES["default"]["NAME"]) as connection:
        row = connection.execute("select ?", (pk,)).fetchone()
    return JsonResponse({"pk": row[0]})


async def blocking_orm(request: HttpRequest) -> JsonResponse:
    """Uses the sync ORM from async code (Django refuses it unless soft mode is on)."""
    names = [item.name for item in Item.objects.order_by("id")[:3]]
    return JsonResponse({"names": names})


# --- views that do the same without blocking -------------------------------------------


async def clean_async(request: HttpRequest) -> JsonResponse:
    """Waits cooperatively."""
    await asyncio.sleep(0.05)
    return JsonResponse({"waited": 0.05})


async def clean_thread(request: HttpRequest) -> JsonResponse:
    """Sleeps and computes in a worker thread."""
    await asyncio.to_thread(time.sleep, 0.05)
    rounds = await asyncio.to_thread(_spin, 0.05)
    return JsonResponse({"rounds": rounds})


async def clean_orm(request: HttpRequest) -> JsonResponse:
    """Uses the async ORM: Django runs the query in its thread."""
    names = [item.name async for item in Item.objects.order_by("id")[:3]]
    return JsonResponse({"names": names, "count": await Item.objects.acount()})


def clean_sync(request: HttpRequest) -> JsonResponse:
    """A sync view: Django runs it in a thread, so sleeping here blocks no loop."""
    time.sleep(0.05)
    return JsonResponse({"sync": True})
