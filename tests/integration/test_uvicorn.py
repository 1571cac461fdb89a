"""A Django project behind LoophoundMiddleware, served by real uvicorn on 127.0.0.1."""

from __future__ import annotations

import inspect
import threading
import time
import urllib.request
from typing import Any

import pytest

from loophound.demo import views

PARAMS = [("asyncio", 1), ("uvloop", 1), ("asyncio", 2)]
IDS = ["asyncio", "uvloop", "two-workers"]


def get(url: str) -> int:
    """GET ``url`` (30 s at most) and return the status."""
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
        return int(response.status)


def line_in_views(text: str) -> int:
    """Return the line of ``loophound.demo.views`` that holds ``text``."""
    for number, line in enumerate(inspect.getsource(views).splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(text)


def wait_for(server: Any, predicate: Any) -> list[dict[str, Any]]:
    """Return the server's events once ``predicate(events)`` holds (10 s at most)."""
    deadline = time.monotonic() + 10
    events = server.events()
    while not predicate(events) and time.monotonic() < deadline:
        time.sleep(0.05)
        events = server.events()
    return events


def routes(events: list[dict[str, Any]]) -> set[str]:
    """Return the routes named by loud events."""
    return {(e["request"] or {}).get("route", "") for e in events if not e["quiet"]}


@pytest.mark.parametrize("uvicorn_server", PARAMS, ids=IDS, indirect=True)
def test_a_blocking_view_is_reported_with_its_route_and_line(uvicorn_server: Any) -> None:
    """time.sleep in an async view is one event naming the route template and the line."""
    assert get(uvicorn_server.url("/blocking/items/41/")) == 200
    assert get(uvicorn_server.url("/blocking/sleep/")) == 200
    events = wait_for(uvicorn_server, lambda ev: "blocking/sleep/" in routes(ev))
    sleeps = [e for e in events if e["operation"] == "time.sleep"]
    assert len(sleeps) == 1
    event = sleeps[0]
    assert event["request"]["route"] == "blocking/sleep/"
    assert event["request"]["method"] == "GET"
    assert event["culprit"]["file"] == views.__file__
    assert event["culprit"]["line"] == line_in_views("time.sleep(0.2)")
    items = [e for e in events if e["operation"] == "sqlite3.connect"]
    assert items[0]["request"]["route"] == "blocking/items/<int:pk>/"
    assert items[0]["request"]["path"] == "/blocking/items/41/"


@pytest.mark.parametrize("uvicorn_server", PARAMS, ids=IDS, indirect=True)
def test_clean_views_report_nothing(uvicorn_server: Any) -> None:
    """A cooperative async view, work offloaded to a thread and a sync view report nothing."""
    for path in ("/clean/async/", "/clean/thread/", "/clean/sync/"):
        for _ in range(2):
            assert get(uvicorn_server.url(path)) == 200
    # A blocking request afterwards proves the log is live, so its silence means something.
    assert get(uvicorn_server.url("/blocking/file/")) == 200
    events = wait_for(uvicorn_server, lambda ev: "blocking/file/" in routes(ev))
    assert routes(events) == {"blocking/file/"}


@pytest.mark.parametrize("uvicorn_server", PARAMS[:2], ids=IDS[:2], indirect=True)
def test_concurrent_requests_do_not_blame_themselves(uvicorn_server: Any) -> None:
    """Clean requests that wait while a CPU-bound view holds the loop are its victims only."""
    statuses: list[int] = []
    bystanders = [
        threading.Thread(target=lambda: statuses.append(get(uvicorn_server.url("/clean/async/"))))
        for _ in range(4)
    ]
    for thread in bystanders:
        thread.start()
    time.sleep(0.02)  # the bystanders are inside their 50 ms wait when the loop stalls
    assert get(uvicorn_server.url("/blocking/cpu/")) == 200
    for thread in bystanders:
        thread.join(30)
    assert statuses == [200] * 4
    events = wait_for(uvicorn_server, lambda ev: "blocking/cpu/" in routes(ev))
    assert routes(events) == {"blocking/cpu/"}
    stall = next(e for e in events if (e["request"] or {}).get("route") == "blocking/cpu/")
    assert stall["kind"] == "stall"
    assert stall["culprit"]["file"] == views.__file__
    # The bystanders waited for it: they are its victims, never its culprit.
    assert stall["victims"]
    assert stall["request"]["id"] not in stall["victims"]
