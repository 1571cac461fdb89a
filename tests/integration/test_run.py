"""``loophound run -- SERVER ...``: real servers on 127.0.0.1 serving an app nobody wrapped.

The demo exposes Django's application unwrapped (``django_application``) and wrapped
(``application``); ``loophound run`` must wrap the first exactly once and leave the
second as it is, on uvicorn, hypercorn, daphne and granian.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import HOST, Server, free_port, get, start_server

import loophound.demo
from helpers import line_of

VENV_BIN = os.path.dirname(sys.executable)
LOOPHOUND = os.path.join(VENV_BIN, "loophound")
UNWRAPPED = "loophound.demo.asgi:django_application"
WRAPPED = "loophound.demo.asgi:application"
#: Upper bound of a ``loophound run`` that must refuse to start.
REFUSE_BOUND = 60.0
#: The demo's views (not imported here: importing them needs Django configured).
VIEWS = os.path.join(os.path.dirname(os.path.abspath(loophound.demo.__file__)), "views.py")
#: How long to keep reading the log after the expected events came.
SETTLE = 0.5

ServerCommand = Callable[[int, str], list[str]]


def _uvicorn(port: int, app: str) -> list[str]:
    return ["uvicorn", "--host", HOST, "--port", str(port), "--log-level", "warning", app]


def _python_m_uvicorn(port: int, app: str) -> list[str]:
    return ["python", "-m", *_uvicorn(port, app)]


def _hypercorn(port: int, app: str) -> list[str]:
    return ["hypercorn", "-b", f"{HOST}:{port}", "--log-level", "warning", app]


def _daphne(port: int, app: str) -> list[str]:
    return ["daphne", "-b", HOST, "-p", str(port), "-v", "0", app]


def _granian(port: int, app: str) -> list[str]:
    argv = ["granian", "--interface", "asgi", "--host", HOST, "--port", str(port)]
    return [*argv, "--log-level", "warning", app]


SERVERS = [
    pytest.param(_uvicorn, id="uvicorn"),
    pytest.param(_python_m_uvicorn, id="python-m-uvicorn"),
    pytest.param(_hypercorn, id="hypercorn"),
    pytest.param(_daphne, id="daphne"),
    pytest.param(_granian, id="granian"),
]


def run_env() -> dict[str, str]:
    """Return what the tests add to start_server's environment: the venv's bin first on PATH."""
    return {"PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[ServerCommand, str], Server]]:
    """Start ``loophound run -- <server> ... <app>`` on 127.0.0.1; stop it by pid afterwards."""
    started: list[Server] = []

    def start(command: ServerCommand, app: str) -> Server:
        port = free_port()
        argv = [LOOPHOUND, "run", "--", *command(port, app)]
        server = start_server(argv, port, tmp_path / "events.jsonl", run_env())
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def sleeps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the time.sleep incidents."""
    return [e for e in events if e["operation"] == "time.sleep"]


def sleep_twice(server: Server) -> list[dict[str, Any]]:
    """GET /blocking/sleep/ twice, one after the other; return the incidents once both came."""
    assert get(server.url("/blocking/sleep/")) == 200
    assert get(server.url("/blocking/sleep/")) == 200
    server.wait_for(lambda ev: len(sleeps(ev)) >= 2)
    time.sleep(SETTLE)  # so that a duplicate written a little later would be seen too
    return server.events()


@pytest.mark.parametrize("command", SERVERS)
def test_run_wraps_an_unwrapped_app(
    serve: Callable[[ServerCommand, str], Server], command: ServerCommand
) -> None:
    """The unwrapped Django app served through loophound run reports the route and the line."""
    server = serve(command, UNWRAPPED)
    events = sleep_twice(server)
    found = sleeps(events)
    assert len(found) == 2, events
    for event in found:
        assert event["request"]["route"] == "blocking/sleep/"
        assert event["request"]["path"] == "/blocking/sleep/"
        assert event["culprit"]["file"] == VIEWS
        assert event["culprit"]["line"] == line_of("time.sleep(0.2)", VIEWS)
    # One middleware: the two requests took consecutive request ids in their process.
    ids = sorted(int(event["request"]["id"]) for event in found)
    assert ids[1] - ids[0] == 1, found
    # Django's thread hops (its signals run through sync_to_async) are written per request.
    hopped = [
        r
        for r in server.records()
        if r["kind"] == "request" and r["request"].get("route") == "blocking/sleep/"
    ]
    assert hopped, server.records()
    assert all(r["thread_hops"]["count"] >= 1 for r in hopped)


@pytest.mark.parametrize("command", SERVERS)
def test_run_does_not_wrap_an_app_twice(
    serve: Callable[[ServerCommand, str], Server], command: ServerCommand
) -> None:
    """An app already in LoophoundMiddleware is served as it is: one event and one id per call."""
    server = serve(command, WRAPPED)
    events = sleep_twice(server)
    found = sleeps(events)
    assert len(found) == 2, events
    assert {e["request"]["route"] for e in found} == {"blocking/sleep/"}
    # A second middleware would take a request id of its own for every request.
    ids = sorted(int(event["request"]["id"]) for event in found)
    assert ids[1] - ids[0] == 1, found


# -- bad input: exit status 2, a message naming the problem, nothing started -------------


def refuse(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``loophound run`` with ``argv`` and the environment without LOOPHOUND_* plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOPHOUND_")}
    return subprocess.run(
        [LOOPHOUND, "run", *argv],
        capture_output=True,
        text=True,
        env={**clean, **run_env(), **env},
        timeout=REFUSE_BOUND,
        check=False,
    )


@pytest.mark.parametrize("argv", [[], ["--"]], ids=["nothing", "dashes-only"])
def test_run_without_a_command_exits_2(argv: list[str]) -> None:
    """loophound run with no server command exits 2 and says the command is missing."""
    done = refuse(argv, {})
    assert done.returncode == 2
    assert "missing the server command" in done.stderr
    assert done.stdout == ""


def test_run_with_an_unknown_server_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    """A command that is none of the known servers exits 2, names it, and is never run."""
    marker = tmp_path / "ran"
    done = refuse(["--", "python", "-c", f"open({str(marker)!r}, 'w')"], {})
    assert done.returncode == 2
    assert "invalid server command 'python'" in done.stderr
    for server in ("uvicorn", "hypercorn", "daphne", "granian"):
        assert server in done.stderr
    assert not marker.exists()


def test_run_with_a_missing_executable_exits_2(tmp_path: Path) -> None:
    """A known server that is not on PATH exits 2 naming the program and PATH."""
    empty = tmp_path / "bin"
    empty.mkdir()
    done = refuse(["--", "uvicorn", "--version"], {"PATH": str(empty)})
    assert done.returncode == 2
    assert "cannot find 'uvicorn' on PATH" in done.stderr
    assert done.stdout == ""


def test_run_with_a_bad_setting_exits_2_and_starts_nothing() -> None:
    """LOOPHOUND_THRESHOLD=abc exits 2 naming the setting and value before the server starts."""
    done = refuse(["--", "python", "-m", "uvicorn", "--version"], {"LOOPHOUND_THRESHOLD": "abc"})
    assert done.returncode == 2
    assert "threshold" in done.stderr
    assert "LOOPHOUND_THRESHOLD" in done.stderr
    assert "'abc'" in done.stderr
    assert "uvicorn" not in done.stdout  # `uvicorn --version` never ran
