"""Outputs that raise, hang or are slow, under a real uvicorn server: the service never notices.

The app (faulty_app.py) wires a sink of its own, the ``on_event`` callback and an
OpenTelemetry span exporter to a switchboard the test flips over HTTP. Whatever they
do, every request is answered 200, clean requests keep completing while an output is
stuck, overflow is dropped and counted, and each failing sink is logged once.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import HOST, REQUEST_BOUND, Server, free_port, get, start_server

from helpers import line_of

APP_DIR = Path(__file__).resolve().parent
#: Not imported here: the app sets up OpenTelemetry and logging handlers in its process.
APP_FILE = str(APP_DIR / "faulty_app.py")
BLOCKING_LINE = line_of("# the blocking line", APP_FILE)
#: faulty_app's outputs and its dispatcher queue bound (TARGETS, QUEUE_SIZE there).
TARGETS = ("faulty", "callback", "otel")
QUEUE_SIZE = 16
#: Upper bound of every wait for the server's state to change.
STATE_BOUND = 20.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def command(port: int, quiet: bool = False) -> list[str]:
    """Return the uvicorn command that serves faulty_app on 127.0.0.1:port.

    ``quiet``: its stdout and stderr go to /dev/null (exec keeps the pid the server's).
    """
    prefix = ["sh", "-c", 'exec "$@" >/dev/null 2>&1', "sh"] if quiet else []
    return [
        *prefix,
        sys.executable,
        "-m",
        "uvicorn",
        "faulty_app:application",
        "--app-dir",
        str(APP_DIR),
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "asyncio",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def start(tmp_path: Path, quiet: bool = False, **env: str) -> Server:
    """Start faulty_app under uvicorn; it answers /clean/ before this returns."""
    port = free_port()
    return start_server(
        command(port, quiet), port, tmp_path / "events.jsonl", env, ready_path="/clean/"
    )


def call(server: Server, path: str) -> dict[str, Any]:
    """GET a control route and return its JSON."""
    with _OPENER.open(server.url(path), timeout=REQUEST_BOUND) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def wait_state(server: Server, holds: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Return the state once ``holds(state)``; fail after STATE_BOUND seconds."""
    deadline = time.monotonic() + STATE_BOUND
    state = call(server, "/state/")
    while not holds(state):
        assert time.monotonic() < deadline, f"state never held: {state}"
        time.sleep(0.05)
        state = call(server, "/state/")
    return state


def hanging(state: dict[str, Any], target: str) -> list[Any] | None:
    """Return the open interval of a hanging call of ``target`` (not returned yet), if any."""
    return next(
        (b for b in state["busy"] if b[0] == target and b[1] == "hang" and b[3] is None), None
    )


def sleep_events(server: Server) -> list[dict[str, Any]]:
    """Return the logged incidents of faulty_app's blocking line."""
    return [
        e
        for e in server.events()
        if e["operation"] == "time.sleep" and (e["culprit"] or {}).get("line") == BLOCKING_LINE
    ]


def errors_naming(state: dict[str, Any], sink: str) -> list[str]:
    """Return the ERROR messages of the loophound logger that name the sink ``sink``."""
    return [m for m in state["errors"] if f"{sink!r} sink raised" in m]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """faulty_app with every output working, shared by the slow and hanging cases."""
    started = start(tmp_path_factory.mktemp("faulty"))
    try:
        yield started
    finally:
        call(started, "/release/")
        started.stop()


def test_slow_outputs_delay_only_loophound_and_lose_nothing(server: Server) -> None:
    """With all three outputs taking 0.1 s per event, requests complete during their work."""
    before = call(server, "/release/")
    for target in TARGETS:
        call(server, f"/fault/?target={target}&kind=slow")
    statuses = []
    # Six incidents, two queue records each (the call, the end of its step): they all
    # fit in the queue while the first one is being delivered.
    for _ in range(6):
        statuses.append(get(server.url("/blocking/")))
        statuses += [get(server.url("/clean/")) for _ in range(3)]
    after = wait_state(
        server,
        lambda s: all(s["calls"][t] - before["calls"][t] >= 6 for t in TARGETS),
    )
    call(server, "/release/")
    assert statuses == [200] * 24
    slow = [b for b in after["busy"][len(before["busy"]) :] if b[3] is not None]
    done = after["clean_done"][len(before["clean_done"]) :]
    during = [t for t in done if any(start <= t <= end for _, _, start, end in slow)]
    assert len(done) == 18
    assert during, "no clean request finished while an output was busy"
    assert after["stats"]["dropped"] == before["stats"]["dropped"]
    assert after["stats"]["sink_failures"] == 0
    assert after["errors"] == []


@pytest.mark.parametrize("target", TARGETS)
def test_a_hanging_output_never_holds_the_loop(server: Server, target: str) -> None:
    """While one output hangs, every request is served, overflow is dropped and counted."""
    call(server, "/release/")
    assert call(server, "/flush/")["flushed"]  # nothing of an earlier test still in delivery
    logged_before = len(sleep_events(server))
    call(server, f"/fault/?target={target}&kind=hang")
    before = call(server, "/state/")
    statuses = [get(server.url("/blocking/"))]
    stuck = wait_state(server, lambda s: hanging(s, target) is not None)
    rounds = 25
    for _ in range(rounds):
        statuses += [get(server.url("/blocking/")), get(server.url("/clean/"))]
    during = call(server, "/state/")
    interval = hanging(during, target)
    call(server, "/release/")
    flushed = call(server, "/flush/")
    statuses.append(get(server.url("/blocking/")))
    after = call(server, "/flush/")

    assert statuses == [200] * (2 + 2 * rounds)
    # Still the same call, still stuck, after every request above was answered.
    assert interval is not None
    assert interval == hanging(stuck, target)
    assert during["calls"][target] == stuck["calls"][target]
    done = during["clean_done"][len(before["clean_done"]) :]
    assert len(done) == rounds
    assert all(t >= interval[2] for t in done)  # each one finished while the call hung
    # The queue holds QUEUE_SIZE records; the rest of the burst was dropped and counted.
    dropped = during["stats"]["dropped"] - before["stats"]["dropped"]
    assert dropped >= rounds - QUEUE_SIZE
    assert flushed["flushed"]
    assert after["flushed"]
    # Everything queued was delivered after the release; only the counted drops are missing.
    # Each incident takes two queue records: the call, and the end of its loop step.
    incidents = after["stats"]["incidents"] - before["stats"]["incidents"]
    logged = len(sleep_events(server)) - logged_before
    assert incidents == rounds + 2
    assert logged >= QUEUE_SIZE // 2
    assert logged + (after["stats"]["dropped"] - before["stats"]["dropped"]) >= incidents
    assert after["calls"][target] > during["calls"][target]  # the output works again
    assert after["stats"]["sink_failures"] == 0
    assert after["errors"] == []


def test_raising_outputs_are_disabled_and_logged_once_each(tmp_path: Path) -> None:
    """Outputs that raise on every event are each counted and logged once; requests get 200."""
    # A file size limit of 0: every write of the JSON-lines sink fails with EFBIG.
    server = start(tmp_path, quiet=True, FAULTY_APP_KIND="raise", FAULTY_APP_FILE_LIMIT="0")
    try:
        statuses = []
        for _ in range(10):
            statuses += [get(server.url("/blocking/")), get(server.url("/clean/"))]
        state = call(server, "/flush/")
    finally:
        server.stop()
    assert statuses == [200] * 20
    assert state["flushed"]
    assert state["stats"]["incidents"] >= 10
    assert state["stats"]["dispatched"] >= 10
    # jsonl, the callback and the added sink each failed once and were disabled.
    assert state["stats"]["sink_failures"] == 3
    assert state["calls"]["callback"] == 1
    assert state["calls"]["faulty"] == 1
    for sink in ("jsonl", "callback", "faulty"):
        assert len(errors_naming(state, sink)) == 1, state["errors"]
    # The SDK's span processor catches its exporter's errors: loophound's otel sink stays
    # enabled and every incident still reaches the exporter.
    assert errors_naming(state, "otel") == []
    assert state["calls"]["otel"] >= 10
    assert len(state["errors"]) == 3
    assert server.log.read_text(encoding="utf-8") == ""  # the log could not grow


def test_sigterm_stops_the_server_while_an_output_hangs(tmp_path: Path) -> None:
    """A server whose callback hangs still exits on SIGTERM, without SIGKILL, log intact."""
    server = start(tmp_path)
    call(server, "/fault/?target=callback&kind=hang")
    statuses = [get(server.url("/blocking/")) for _ in range(3)]
    wait_state(server, lambda s: hanging(s, "callback") is not None)
    server.stop()  # SIGTERM; raises if SIGKILL was needed
    assert server.process.returncode is not None
    assert statuses == [200] * 3
    text = server.log.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert all(json.loads(line) for line in text.splitlines())
    assert len(sleep_events(server)) >= 1
