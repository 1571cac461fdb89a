"""Fork safety: a guard installed before a fork works in the child, with the child's pid.

``gunicorn --preload`` imports the application (and so installs the guard) in its
master process, then forks the workers. Only the forking thread survives a fork: the
guard's dispatcher and watchdog threads must be started again in each worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import HOST, Server, free_port, get, start_server

import loophound
from helpers import BOUND, line_of

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.dirname(sys.executable)
GUNICORN = os.path.join(VENV_BIN, "gunicorn")
#: Rounds of two overlapping requests sent until both workers reported one.
ROUNDS = 20
#: Upper bound of the wait for a forked child to exit.
CHILD_BOUND = 30.0


def _parent_of(pid: int) -> int:
    """Return the parent pid of ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as file:
        return int(file.read().rpartition(")")[2].split()[1])


def sleeps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the time.sleep incidents."""
    return [e for e in events if e["operation"] == "time.sleep"]


@dataclass(frozen=True)
class Preloaded:
    """A gunicorn --preload server under test, its master's pid and its worker class."""

    server: Server
    master: int
    worker_class: str

    def stalls_carry_requests(self) -> bool:
        """Whether a stall names its request here (not on uvloop under 3.11: README limits)."""
        return sys.version_info >= (3, 12) or "H11" in self.worker_class


@pytest.fixture(
    params=[
        pytest.param("uvicorn.workers.UvicornWorker", id="uvicorn-worker-uvloop"),
        pytest.param("uvicorn.workers.UvicornH11Worker", id="uvicorn-worker-asyncio"),
    ]
)
def preloaded(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Preloaded]:
    """gunicorn --preload with two workers on 127.0.0.1, stopped by pid afterwards."""
    port = free_port()
    marker = tmp_path / "master.txt"
    command = [GUNICORN, "-k", request.param, "--preload", "-w", "2"]
    command += ["-b", f"{HOST}:{port}", "--pythonpath", HERE, "--graceful-timeout", "5"]
    command += ["--log-level", "warning", "preload_app:application"]
    path = VENV_BIN + os.pathsep + os.environ.get("PATH", "")
    env = {"PATH": path, "PRELOAD_MARKER": str(marker)}
    server = start_server(command, port, tmp_path / "events.jsonl", env)
    try:
        master = server.process.pid
        # The guard really was installed in the master, before any worker was forked.
        assert marker.read_text(encoding="utf-8").split() == [str(master), "True"]
        yield Preloaded(server, master, request.param)
    finally:
        server.stop()


def _overlapping_sleeps(server: Server) -> None:
    """Send two /blocking/sleep/ requests, the second while the first holds its worker's loop.

    The worker whose loop sleeps cannot accept, so the second request goes to the other
    worker, unless the kernel handed both to one before it blocked.
    """
    statuses: list[int] = []

    def fetch() -> None:
        statuses.append(get(server.url("/blocking/sleep/")))

    first = threading.Thread(target=fetch)
    second = threading.Thread(target=fetch)
    first.start()
    time.sleep(0.05)
    second.start()
    first.join(60)
    second.join(60)
    assert not first.is_alive()
    assert not second.is_alive()
    assert statuses == [200, 200]


def test_each_preloaded_worker_reports_with_its_own_pid(preloaded: Preloaded) -> None:
    """Both workers forked from a master with a guard report their blocking calls as themselves."""
    server, master = preloaded.server, preloaded.master
    sent = 0
    pids: set[int] = set()
    for _ in range(ROUNDS):
        _overlapping_sleeps(server)
        sent += 2
        events = server.wait_for(lambda ev, n=sent: len(sleeps(ev)) >= n)
        pids = {e["pid"] for e in sleeps(events)}
        if len(pids) >= 2:
            break
    assert len(pids) == 2, pids
    assert master not in pids
    assert all(_parent_of(pid) == master for pid in pids)
    for event in sleeps(events):
        assert event["request"]["route"] == "blocking/sleep/"
        assert event["culprit"]["function"] == "blocking_sleep"


def test_a_stall_is_reported_from_a_preloaded_worker(preloaded: Preloaded) -> None:
    """A CPU stall in a forked worker is seen by the watchdog thread the fork restarted."""
    server, master = preloaded.server, preloaded.master
    assert get(server.url("/blocking/cpu/")) == 200
    # Only /blocking/cpu/ burns the CPU on the loop; the readiness request sleeps in a thread.
    events = server.wait_for(lambda ev: any(e["kind"] == "stall" for e in ev))
    stalls = [e for e in events if e["kind"] == "stall"]
    assert stalls, events
    stall = stalls[0]
    assert stall["operation"] == "cpu"
    assert stall["culprit"]["function"] == "_spin"
    assert "watchdog" in stall["detectors"]
    assert stall["samples"]  # stacks sampled by the worker's watchdog thread
    assert stall["pid"] != master
    assert _parent_of(stall["pid"]) == master
    if preloaded.stalls_carry_requests():
        assert stall["request"]["route"] == "blocking/cpu/"


# -- os.fork() directly ---------------------------------------------------------------------


async def _child_main() -> None:
    time.sleep(0.2)  # fork-child-sleep


async def _parent_main() -> None:
    time.sleep(0.2)  # fork-parent-sleep


def _wait_for_child(pid: int) -> int:
    """Return the child's wait status; kill it and fail if it runs longer than 30 s."""
    deadline = time.monotonic() + CHILD_BOUND
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} did not exit within {CHILD_BOUND} s")


def _run_child() -> int:
    """In the forked child: block a loop, wait until the event is written; the exit code."""
    asyncio.run(_child_main())
    current = loophound.active_guard()
    if current is None:
        return 3
    return 0 if current.flush(BOUND) else 4


def test_a_forked_child_reports_its_blocking_call_with_its_pid(tmp_path: Path) -> None:
    """After os.fork(), the child's guard reports the child's time.sleep with the child's pid."""
    log = tmp_path / "events.jsonl"
    guard = loophound.install(jsonl=str(log), sinks=())
    try:
        with warnings.catch_warnings():
            # The guard's threads make this process multi-threaded; forking is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                code = _run_child()
            finally:
                os._exit(code)
        status = _wait_for_child(pid)
        # The parent's guard still works after the fork.
        asyncio.run(_parent_main())
        assert guard.flush(BOUND)
    finally:
        guard.uninstall()
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0
    records = _records(log)
    by_pid = {r["pid"]: r for r in sleeps(records)}
    assert sorted(by_pid) == sorted([pid, os.getpid()]), records
    assert len(sleeps(records)) == 2
    assert by_pid[pid]["culprit"]["line"] == line_of("# fork-child-sleep", __file__)
    assert by_pid[os.getpid()]["culprit"]["line"] == line_of("# fork-parent-sleep", __file__)


def _records(log: Path) -> list[dict[str, Any]]:
    """Return the JSON lines of ``log``."""
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]
