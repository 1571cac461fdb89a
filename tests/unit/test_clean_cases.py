"""Clean cases: calls that cannot block the loop, or happen off it, produce no event.

Offloaded work, non-blocking primitives, asyncio's own machinery, other threads, loops
that only await, allow scopes and allow rules, and calls made while no loop runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import loophound
from helpers import line_of, loud, run_captured, run_captured_in_thread
from loophound import _recorder

if TYPE_CHECKING:
    import pytest

BOUND = 5.0  # upper bound of a wait that is expected to succeed
SHORT = 0.01
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "src")


def blocking_work(directory: Path, address: tuple[str, int]) -> None:
    """Do one of each kind of blocking call: sleep, files, a child, DNS, TCP, waits."""
    time.sleep(SHORT)
    path = directory / "work.txt"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("x")
    with open(path, encoding="utf-8") as handle:
        handle.read()
    os.listdir(directory)
    subprocess.run(["true"], check=True)
    socket.getaddrinfo("localhost", address[1])
    with socket.create_connection(address, timeout=BOUND):
        pass
    threading.Event().wait(SHORT)
    with contextlib.suppress(queue.Empty):
        queue.Queue[int]().get(timeout=SHORT)


# --- offloaded ---------------------------------------------------------------------


def test_work_offloaded_with_to_thread_is_clean(tmp_path: Path, listener: socket.socket) -> None:
    """Blocking calls run through asyncio.to_thread happen off the loop and are no incident."""
    address = listener.getsockname()

    async def main() -> None:
        await asyncio.to_thread(blocking_work, tmp_path, address)

    assert run_captured(main) == []


def test_work_offloaded_with_run_in_executor_is_clean(
    tmp_path: Path, listener: socket.socket
) -> None:
    """Blocking calls run through loop.run_in_executor(None, ...) are no incident."""
    address = listener.getsockname()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, blocking_work, tmp_path, address)

    assert run_captured(main) == []


def test_first_executor_use_in_a_fresh_interpreter_is_clean() -> None:
    """The first to_thread/run_in_executor of a fresh process (thread start, lazy executor
    import) is asyncio's machinery and no event, not even a quiet one."""
    script = textwrap.dedent(
        """
        import asyncio, json, sys, time
        import loophound

        lazy = "concurrent.futures.thread" not in sys.modules

        async def main():
            await asyncio.to_thread(time.sleep, 0)
            await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0)

        with loophound.capture(sinks=()) as events:
            asyncio.run(main())
        print(json.dumps({"lazy": lazy, "events": [e.operation for e in events]}))
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    env = {key: value for key, value in env.items() if not key.startswith("LOOPHOUND_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"lazy": True, "events": []}


def test_thread_start_on_the_loop_is_machinery_without_a_stack_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thread.start on the loop is counted as machinery and never reaches the recorder's walk."""
    asked: list[str] = []
    begin = _recorder.Recorder.begin

    def spied(self: Any, operation: str, *args: Any) -> Any:
        asked.append(operation)
        return begin(self, operation, *args)

    monkeypatch.setattr(_recorder.Recorder, "begin", spied)
    started: list[threading.Thread] = []

    async def main() -> None:
        worker = threading.Thread(target=time.sleep, args=(0,))
        worker.start()
        started.append(worker)

    with loophound.capture(sinks=()) as events:
        asyncio.run(main())
        guard = loophound.active_guard()
        assert guard is not None
        machinery = guard.stats.machinery
    started[0].join(BOUND)
    assert list(events) == []
    assert "threading.Event.wait" not in asked
    assert machinery >= 1


# --- cannot block ------------------------------------------------------------------


def test_sleep_zero_is_clean() -> None:
    """time.sleep(0) only yields the GIL and is no incident."""

    async def main() -> None:
        time.sleep(0)

    assert run_captured(main) == []


def test_non_blocking_sockets_are_clean(listener: socket.socket) -> None:
    """send, recv, connect and accept on sockets set non-blocking are no incident."""
    address = listener.getsockname()
    listener.setblocking(False)  # noqa: FBT003

    async def main() -> None:
        a, b = socket.socketpair()
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            a.setblocking(False)  # noqa: FBT003
            b.setblocking(False)  # noqa: FBT003
            client.setblocking(False)  # noqa: FBT003
            a.send(b"x")
            a.sendall(b"y")
            b.recv(1)
            b.recv_into(bytearray(1))
            with contextlib.suppress(BlockingIOError):
                b.recv(1)
            with contextlib.suppress(BlockingIOError):
                client.connect(address)
            with contextlib.suppress(BlockingIOError):
                listener.accept()[0].close()
        finally:
            a.close()
            b.close()
            client.close()

    assert run_captured(main) == []


def test_asyncio_networking_on_localhost_is_clean() -> None:
    """asyncio's own servers, streams and loop.sock_* calls on 127.0.0.1 are no incident."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(2))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    replies: list[bytes] = []

    async def main() -> None:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("localhost", port)
            writer.write(b"hi")
            await writer.drain()
            replies.append(await asyncio.wait_for(reader.read(), BOUND))
            writer.close()
            await writer.wait_closed()
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)  # noqa: FBT003
            try:
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(sock, b"yo")
                replies.append(await asyncio.wait_for(loop.sock_recv(sock, 2), BOUND))
            finally:
                sock.close()
        finally:
            server.close()
            await server.wait_closed()

    assert run_captured(main) == []
    assert replies == [b"hi", b"yo"]


def test_waits_that_need_not_wait_are_clean() -> None:
    """A set Event, a free Semaphore, a non-empty or non-full queue, a done Future and a
    finished thread return at once and are no incident."""
    done: concurrent.futures.Future[int] = concurrent.futures.Future()
    done.set_result(1)
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join(BOUND)

    async def main() -> None:
        event = threading.Event()
        event.set()
        event.wait()
        semaphore = threading.Semaphore(1)
        semaphore.acquire()
        semaphore.release()
        q: queue.Queue[int] = queue.Queue(maxsize=2)
        q.put(1)
        q.get()
        q.put(1, timeout=BOUND)
        q.get(timeout=BOUND)
        assert done.result() == 1
        assert done.exception() is None
        finished.join()

    assert run_captured(main) == []


def test_asyncio_subprocess_is_clean() -> None:
    """asyncio.create_subprocess_exec and its wait and communicate are asyncio's
    machinery, not blocking calls."""
    outputs: list[bytes] = []

    async def main() -> None:
        child = await asyncio.create_subprocess_exec("true")
        await asyncio.wait_for(child.wait(), BOUND)
        child = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(child.communicate(b"hi"), BOUND)
        outputs.append(out)

    assert run_captured(main) == []
    assert outputs == [b"hi"]


def test_loop_getaddrinfo_is_clean() -> None:
    """loop.getaddrinfo resolves in the default executor and is no incident."""
    answers: list[object] = []

    async def main() -> None:
        answers.append(await asyncio.get_running_loop().getaddrinfo("localhost", 80))

    assert run_captured(main) == []
    assert answers


def test_logging_to_a_stream_handler_is_clean() -> None:
    """logger.warning through a StreamHandler on the loop is no incident."""
    logger = logging.getLogger("loophound-tests.clean")
    stream = io.StringIO()
    handlers = [logging.StreamHandler(stream), logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        logger.addHandler(handler)
    logger.propagate = False

    async def main() -> None:
        logger.warning("a warning from the loop")

    try:
        assert run_captured(main) == []
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.propagate = True
    assert "a warning from the loop" in stream.getvalue()


# --- other threads -----------------------------------------------------------------


def test_blocking_in_a_plain_thread_while_a_loop_runs_is_clean(
    tmp_path: Path, listener: socket.socket
) -> None:
    """Blocking calls in a plain threading.Thread, while the main thread runs a loop, are
    no incident."""
    address = listener.getsockname()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            blocking_work(tmp_path, address)
        except BaseException as exc:  # reported by the test, never lost in the thread
            errors.append(exc)

    async def main() -> None:
        worker = threading.Thread(target=work)
        worker.start()
        await asyncio.to_thread(worker.join, BOUND)
        assert not worker.is_alive()

    assert run_captured(main) == []
    assert errors == []


def test_loop_in_a_worker_thread_that_only_awaits_is_clean() -> None:
    """A loop run by a non-main thread that only awaits produces no event."""

    async def main() -> None:
        await asyncio.sleep(SHORT)
        await asyncio.to_thread(time.sleep, SHORT)
        child = await asyncio.create_subprocess_exec("true")
        await asyncio.wait_for(child.wait(), BOUND)

    assert run_captured_in_thread(main, "quiet-loop") == []


def test_calls_before_and_after_the_loop_are_clean(tmp_path: Path) -> None:
    """Blocking calls made before a loop starts, between loops and after it stops are no
    incident."""
    path = tmp_path / "f.txt"

    async def main() -> None:
        await asyncio.sleep(0)

    with loophound.capture(sinks=()) as events:
        time.sleep(SHORT)
        path.write_text("x", encoding="utf-8")
        asyncio.run(main())
        path.read_text(encoding="utf-8")
        threading.Event().wait(SHORT)
        asyncio.run(main())
        subprocess.run(["true"], check=True)
    assert list(events) == []


# --- allowed -----------------------------------------------------------------------


def test_allow_blocking_scope_is_clean(tmp_path: Path) -> None:
    """Blocking calls inside `with loophound.allow_blocking(reason)` are no incident."""
    path = tmp_path / "f.txt"

    async def main() -> None:
        with loophound.allow_blocking("a test of the allow scope"):
            time.sleep(SHORT)
            path.write_text("x", encoding="utf-8")
            subprocess.run(["true"], check=True)

    assert run_captured(main) == []


def test_allow_blocking_decorator_is_clean() -> None:
    """Functions and coroutines decorated with allow_blocking(reason) may block."""

    @loophound.allow_blocking("a test of the decorator on a function")
    def sync_helper() -> None:
        time.sleep(SHORT)

    @loophound.allow_blocking("a test of the decorator on a coroutine")
    async def async_helper() -> None:
        time.sleep(SHORT)

    async def main() -> None:
        sync_helper()
        await async_helper()

    assert run_captured(main) == []


def test_allow_scope_does_not_leak_to_a_sibling_task() -> None:
    """An allow scope open in one task does not cover a sibling task's blocking call."""

    async def allowed() -> None:
        with loophound.allow_blocking("the sibling must still be reported"):
            await asyncio.sleep(SHORT)  # the sibling runs while this scope is open
            time.sleep(SHORT)

    async def sibling() -> None:
        await asyncio.sleep(0)
        time.sleep(SHORT)  # marker-sibling-sleep

    async def main() -> None:
        await asyncio.gather(allowed(), sibling())

    found = loud(run_captured(main))
    assert [e.operation for e in found] == ["time.sleep"]
    assert found[0].culprit is not None
    assert found[0].culprit.lineno == line_of("# marker-sibling-sleep", __file__)


def test_allow_operation_rule_is_clean() -> None:
    """An allow rule 'operation:time.sleep' silences time.sleep but no other operation."""

    async def main() -> None:
        time.sleep(SHORT)
        threading.Event().wait(SHORT)  # marker-not-allowed

    found = loud(run_captured(main, allow=["operation:time.sleep"]))
    assert [e.operation for e in found] == ["threading.Event.wait"]
    assert found[0].culprit is not None
    assert found[0].culprit.lineno == line_of("# marker-not-allowed", __file__)
