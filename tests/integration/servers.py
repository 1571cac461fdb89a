"""Real servers on 127.0.0.1: the table of them, start, wait until they serve, stop by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP = "loophound.demo.asgi:application"
HOST = "127.0.0.1"

#: Upper bound of one HTTP request, of a server's start and of its stop.
REQUEST_BOUND = 30.0
START_BOUND = 30.0
STOP_BOUND = 15.0
#: Upper bound of the wait for an event to reach the log.
EVENT_BOUND = 10.0
#: No proxy, whatever the environment says: the tests talk to 127.0.0.1 only.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Variant:
    """One way to serve the demo project: a server, its event loop, its worker processes.

    ``argv`` follows ``python -m``; ``{port}`` in it is replaced by the port.
    """

    name: str
    loop: str
    workers: int
    argv: tuple[str, ...]

    def command(self, port: int) -> list[str]:
        """Return the command line that serves the demo on 127.0.0.1:port."""
        return [sys.executable, "-m", *(arg.replace("{port}", str(port)) for arg in self.argv)]


def _uvicorn(name: str, loop: str, workers: int) -> Variant:
    argv = ("uvicorn", APP, "--host", HOST, "--port", "{port}", "--loop", loop)
    argv += ("--workers", str(workers), "--log-level", "warning", "--no-access-log")
    return Variant(name, loop, workers, argv)


def _hypercorn(name: str, loop: str) -> Variant:
    # -k picks the worker class, that is the loop; one worker process (the default).
    argv = ("hypercorn", "-b", f"{HOST}:{{port}}", "-k", loop, "--log-level", "warning", APP)
    return Variant(name, loop, 1, argv)


def _granian(name: str, loop: str) -> Variant:
    # Granian's default interface is rsgi; its default loop ("auto") is uvloop when installed.
    argv = ("granian", "--interface", "asgi", "--host", HOST, "--port", "{port}")
    argv += ("--loop", loop, "--log-level", "warning", APP)
    return Variant(name, loop, 1, argv)


#: Every server and loop the integration tests run the demo on.
VARIANTS = [
    _uvicorn("uvicorn-asyncio", "asyncio", 1),
    _uvicorn("uvicorn-uvloop", "uvloop", 1),
    _uvicorn("uvicorn-two-workers", "asyncio", 2),
    _hypercorn("hypercorn-asyncio", "asyncio"),
    _hypercorn("hypercorn-uvloop", "uvloop"),
    # Daphne runs Twisted's asyncio reactor: an asyncio loop in the main process.
    Variant("daphne", "asyncio", 1, ("daphne", "-b", HOST, "-p", "{port}", "-v", "0", APP)),
    _granian("granian-asyncio", "asyncio"),
    _granian("granian-uvloop", "uvloop"),
]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str) -> int:
    """GET ``url`` (30 s at most) and return the status."""
    with _OPENER.open(url, timeout=REQUEST_BOUND) as response:
        response.read()
        return int(response.status)


def _children(pid: int) -> list[int]:
    """Return the pids of the processes ``pid`` started, recursively (Linux /proc)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as file:
                kids = [int(kid) for kid in file.read().split()]
        except OSError:
            continue
        for kid in kids:
            found.append(kid)
            found.extend(_children(kid))
    return found


def _alive(pid: int) -> bool:
    """Return whether ``pid`` is a process that has not exited (zombies have exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            state = file.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


@dataclass
class Server:
    """A server process under test and the event log it writes."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on this server."""
        return f"http://{HOST}:{self.port}{path}"

    def records(self) -> list[dict[str, Any]]:
        """Return the complete JSON lines written so far (a line still being written waits)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").split("\n")[:-1]
        return [json.loads(line) for line in lines if line]

    def events(self) -> list[dict[str, Any]]:
        """Return the incidents written so far (records of served requests left out)."""
        return [record for record in self.records() if record.get("kind") != "request"]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        """Return the incidents once ``predicate(incidents)`` holds, or after 10 s."""
        deadline = time.monotonic() + EVENT_BOUND
        events = self.events()
        while not predicate(events) and time.monotonic() < deadline:
            time.sleep(0.05)
            events = self.events()
        return events

    def stop(self) -> None:
        """Stop the server by its pid and check that its workers went with it.

        SIGTERM, then SIGKILL after 15 s; worker processes still alive 15 s after the
        server exited are killed by their pids. Either SIGKILL fails the caller.
        """
        workers = _children(self.process.pid)
        problems: list[str] = []
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_BOUND)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_BOUND)
                problems.append(f"server {self.process.pid} ignored SIGTERM for 15 s")
        deadline = time.monotonic() + STOP_BOUND
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                problems.append(f"worker {pid} outlived its server by 15 s")
        if problems:
            raise AssertionError("; ".join(problems))


def start_server(
    command: list[str], port: int, log: Path, env: dict[str, str], ready_path: str = "/clean/sync/"
) -> Server:
    """Start ``command``; return once it answered 200 to GET ``ready_path`` (30 s at most).

    The request, not the open port, proves readiness: hypercorn and granian listen in a
    supervisor process before their worker has loaded the application. ``ready_path``
    must be a view that reports nothing.
    """
    full_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "loophound.demo.settings",
        "LOOPHOUND_JSONL": str(log),
        "LOOPHOUND_SINKS": "jsonl",
        **env,
    }
    process = subprocess.Popen(command, env=full_env)
    server = Server(process, port, log)
    try:
        _wait_until_serving(server, command, ready_path)
    except BaseException:
        try:
            server.stop()
        except AssertionError:
            pass  # the reason it did not start matters more
        raise
    return server


def _wait_until_serving(server: Server, command: list[str], ready_path: str) -> None:
    deadline = time.monotonic() + START_BOUND
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"{command[2:4]} exited with {server.process.returncode}")
        try:
            with socket.create_connection((HOST, server.port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        raise AssertionError(f"{command[2:4]} did not listen on {server.port} within 30 s")
    status = get(server.url(ready_path))
    if status != 200:
        raise AssertionError(f"{command[2:4]} answered {status} to GET {ready_path}")
