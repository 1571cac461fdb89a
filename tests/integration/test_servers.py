"""The demo project behind LoophoundMiddleware on every real server of servers.VARIANTS.

uvicorn (asyncio, uvloop, two workers), hypercorn (asyncio, uvloop), daphne (Twisted's
asyncio reactor) and granian (asyncio, uvloop), each started on 127.0.0.1 and asked over
real HTTP.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from servers import VARIANTS, Server, Variant, get


def _views_file() -> str:
    """Return the path of ``loophound.demo.views``, found but not imported.

    Importing it would import the demo's Django models, which need configured settings.
    """
    spec = importlib.util.find_spec("loophound.demo.views")
    if spec is None or spec.origin is None:
        raise AssertionError("loophound.demo.views not found")
    return spec.origin


VIEWS_FILE = _views_file()


def line_in_views(text: str) -> int:
    """Return the line of ``loophound/demo/views.py`` that holds ``text``."""
    lines = Path(VIEWS_FILE).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if text in line:
            return number
    raise AssertionError(text)


def routes(events: list[dict[str, Any]]) -> set[str]:
    """Return the routes named by loud events."""
    return {(e["request"] or {}).get("route", "") for e in events if not e["quiet"]}


def _victims_skip(variant: Variant) -> str | None:
    """Return why the victims test cannot run on ``variant``, or None when it can."""
    if variant.workers > 1:
        return (
            "two worker processes: the bystanders and the CPU-bound request may be served "
            "by different processes, whose loops never wait for each other"
        )
    if variant.loop == "uvloop" and sys.version_info < (3, 12):
        return (
            "known limit (README): on uvloop under Python 3.11 a stall carries no request "
            "(Task.get_context() is new in 3.12), so the stalling request is listed among "
            "its own victims"
        )
    return None


def _params(skip: Callable[[Variant], str | None] | None = None) -> list[Any]:
    """Return VARIANTS as pytest params, the ones ``skip(variant)`` gives a reason for skipped."""
    params = []
    for variant in VARIANTS:
        reason = skip(variant) if skip is not None else None
        marks = [pytest.mark.skip(reason=f"{variant.name}: {reason}")] if reason else []
        params.append(pytest.param(variant, id=variant.name, marks=marks))
    return params


@pytest.mark.parametrize("server", _params(), indirect=True)
def test_a_blocking_view_is_reported_with_its_route_and_line(server: Server) -> None:
    """time.sleep in an async view is one event naming the route template and the line."""
    assert get(server.url("/blocking/items/41/")) == 200
    assert get(server.url("/blocking/sleep/")) == 200
    events = server.wait_for(
        lambda ev: {"blocking/sleep/", "blocking/items/<int:pk>/"} <= routes(ev)
    )
    sleeps = [e for e in events if e["operation"] == "time.sleep"]
    assert len(sleeps) == 1, events
    event = sleeps[0]
    assert event["request"]["route"] == "blocking/sleep/"
    assert event["request"]["method"] == "GET"
    assert event["culprit"]["file"] == VIEWS_FILE
    assert event["culprit"]["line"] == line_in_views("time.sleep(0.2)")
    items = [e for e in events if e["operation"] == "sqlite3.connect"]
    assert items, events
    assert items[0]["request"]["route"] == "blocking/items/<int:pk>/"
    assert items[0]["request"]["path"] == "/blocking/items/41/"


@pytest.mark.parametrize("server", _params(), indirect=True)
def test_clean_views_report_nothing(server: Server) -> None:
    """Cooperative async views, work offloaded to a thread and a sync view report nothing."""
    for path in ("/clean/async/", "/clean/thread/", "/clean/orm/", "/clean/sync/"):
        for _ in range(2):
            assert get(server.url(path)) == 200
    # A blocking request afterwards proves the log is live, so its silence means something.
    assert get(server.url("/blocking/file/")) == 200
    events = server.wait_for(lambda ev: "blocking/file/" in routes(ev))
    assert routes(events) == {"blocking/file/"}, events


@pytest.mark.parametrize("server", _params(_victims_skip), indirect=True)
def test_concurrent_requests_do_not_blame_themselves(server: Server) -> None:
    """Clean requests that wait while a CPU-bound view holds the loop are its victims only."""
    statuses: list[int] = []
    bystanders = [
        threading.Thread(target=lambda: statuses.append(get(server.url("/clean/async/"))))
        for _ in range(4)
    ]
    for thread in bystanders:
        thread.start()
    time.sleep(0.02)  # the bystanders are inside their 50 ms wait when the loop stalls
    assert get(server.url("/blocking/cpu/")) == 200
    for thread in bystanders:
        thread.join(30)
    assert statuses == [200] * 4
    events = server.wait_for(lambda ev: "blocking/cpu/" in routes(ev))
    assert routes(events) == {"blocking/cpu/"}, events
    stall = next(e for e in events if (e["request"] or {}).get("route") == "blocking/cpu/")
    assert stall["kind"] == "stall"
    assert stall["culprit"]["file"] == VIEWS_FILE
    # The bystanders waited for it: they are its victims, never its culprit.
    assert stall["victims"], stall
    assert stall["request"]["id"] not in stall["victims"]
