"""uvicorn --workers 2: a worker killed with SIGKILL, then SIGTERM of the whole server.

The JSON-lines log the workers share never gets a truncated line, nothing written
before SIGTERM is lost, an incident detected just before SIGTERM is still written as
the worker exits, and the worker uvicorn starts in place of the killed one reports
blocking calls again.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from servers import VARIANTS, Server, free_port, get, start_server

TWO_WORKERS = next(v for v in VARIANTS if v.name == "uvicorn-two-workers")
#: Upper bound of every wait in this file (a worker's start, an event reaching the log).
BOUND = 30.0


def workers(server: Server) -> list[int]:
    """Return the pids of the server's worker processes (multiprocessing's spawn children)."""
    found = []
    try:
        children = os.listdir(f"/proc/{server.process.pid}/task")
    except OSError:
        return found
    for task in children:
        try:
            with open(f"/proc/{server.process.pid}/task/{task}/children", encoding="ascii") as f:
                pids = [int(pid) for pid in f.read().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"spawn_main" in f.read():
                        found.append(pid)
            except OSError:
                continue
    return sorted(found)


def wait_for_workers(server: Server, exclude: set[int]) -> list[int]:
    """Return the two worker pids once neither is in ``exclude`` (BOUND seconds at most)."""
    deadline = time.monotonic() + BOUND
    while True:
        pids = workers(server)
        if len(pids) == 2 and not set(pids) & exclude:
            return pids
        assert time.monotonic() < deadline, f"workers {pids}, excluded {exclude}"
        time.sleep(0.05)


def parallel_gets(server: Server, paths: list[str]) -> list[int]:
    """GET every path at once, one thread each; return the statuses (0 for an error)."""
    statuses: list[int] = []

    def fetch(path: str) -> None:
        try:
            statuses.append(get(server.url(path)))
        except OSError:
            statuses.append(0)

    threads = [threading.Thread(target=fetch, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND + 5)
    return statuses


def parse_all(text: str) -> list[dict[str, Any]]:
    """Parse every line of a JSON-lines text; a truncated line fails the test."""
    assert text.endswith("\n"), text[-200:]
    return [json.loads(line) for line in text.splitlines()]


def test_sigkill_of_a_worker_and_sigterm_of_the_server_keep_the_log_whole(
    tmp_path: Path,
) -> None:
    """After SIGKILL of a worker and SIGTERM of the server every line parses, none is lost."""
    port = free_port()
    log = tmp_path / "events.jsonl"
    server = start_server(TWO_WORKERS.command(port), port, log, {})
    served: list[int] = []
    try:
        first = wait_for_workers(server, set())
        victim = first[0]
        # Blocking requests keep both workers writing to the log while one is killed.
        stop = threading.Event()

        def traffic() -> None:
            # Pairs of slow requests: while one worker sleeps, the other accepts.
            for _ in range(500):
                if stop.is_set():
                    return
                served.extend(parallel_gets(server, ["/blocking/sleep/"] * 2))

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            events = server.wait_for(lambda found: {e["pid"] for e in found} >= set(first))
            assert {e["pid"] for e in events} >= set(first), "a worker never wrote"
            os.kill(victim, signal.SIGKILL)
            replaced = wait_for_workers(server, {victim})
        finally:
            stop.set()
            sender.join(BOUND + 5)
        assert not sender.is_alive()
        (newcomer,) = set(replaced) - set(first)
        # Two slow requests at a time: while one worker sleeps, the other accepts.
        restarted: list[dict[str, Any]] = []
        deadline = time.monotonic() + BOUND
        for _ in range(50):
            assert parallel_gets(server, ["/blocking/sleep/"] * 2) == [200, 200]
            restarted = [
                e
                for e in server.events()
                if e["pid"] == newcomer and e["operation"] == "time.sleep"
            ]
            if restarted or time.monotonic() > deadline:
                break
        # The complete lines so far (a worker may be writing one right now).
        written = log.read_text(encoding="utf-8")
        written = written[: written.rfind("\n") + 1]
        # Detected just before SIGTERM: delivered as the worker shuts down.
        last_path = "/blocking/items/424242/"
        last = get(server.url(last_path))
    finally:
        server.stop()
    text = log.read_text(encoding="utf-8")
    records = parse_all(text)
    assert served.count(200) >= 2  # requests in flight at the kill may fail, the rest not
    assert restarted, "the restarted worker reported nothing"
    assert last == 200
    parse_all(written)
    assert text.startswith(written)  # nothing written before SIGTERM was lost or changed
    assert {r["pid"] for r in records} >= {*first, newcomer}
    assert any((r.get("request") or {}).get("path") == last_path for r in records)
    sleeps = [r for r in records if r["pid"] == newcomer and r.get("operation") == "time.sleep"]
    assert sleeps
    assert all(r["request"]["route"] == "blocking/sleep/" for r in sleeps)
