"""The patch detector: every wrapped primitive is flagged on the loop thread, at its line.

Everything is real: files, pipes, subprocesses, sockets on 127.0.0.1, threads. Each
test makes exactly one blocking call on the loop and checks the one event it yields.
Waits that could hang are bounded by small timeouts, and every thread, socket and
process a test starts is stopped before it ends.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import io
import os
import queue
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loophound
from helpers import line_of, loud, one_patched_event, run_captured, run_captured_in_thread
from loophound import BlockingCallError, BlockingCallWarning, Event

SHORT = 0.01  # timeout of a wait that is expected to time out
BOUND = 5.0  # upper bound of a wait that is expected to succeed


def only_event(events: list[Event], operation: str, marker: str) -> Event:
    """Assert ``events`` hold one loud event, for ``operation`` at ``marker``'s line."""
    event = one_patched_event(events, operation, marker, __file__)
    assert event.kind == "call"
    assert event.thread_name == threading.current_thread().name
    assert event.duration is not None
    assert event.duration >= 0
    return event


# --- time.sleep --------------------------------------------------------------------


def test_time_sleep_is_flagged() -> None:
    """time.sleep with a positive delay on the loop is one time.sleep event at its line."""

    async def main() -> None:
        time.sleep(SHORT)  # marker-sleep

    only_event(run_captured(main), "time.sleep", "# marker-sleep")


def test_time_sleep_zero_is_not_flagged() -> None:
    """time.sleep(0) only yields the GIL and is no incident."""

    async def main() -> None:
        time.sleep(0)

    assert run_captured(main) == []


# --- sockets -----------------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of blocking sockets, bounded by a timeout, closed after the test."""
    a, b = socket.socketpair()
    a.settimeout(BOUND)
    b.settimeout(BOUND)
    yield a, b
    a.close()
    b.close()


def test_socket_recv_is_flagged(pair: tuple[socket.socket, socket.socket]) -> None:
    """recv on a blocking socket is flagged even when the data is already there."""
    a, b = pair
    a.sendall(b"x")

    async def main() -> None:
        b.recv(1)  # marker-recv

    only_event(run_captured(main), "socket.recv", "# marker-recv")


def test_a_non_blocking_socket_leaves_the_wrappers_and_returns_when_it_can_block(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A non-blocking socket's calls go straight to the originals until it can block again."""
    a, b = pair
    a.sendall(b"xyz")
    b.settimeout(0)

    async def main() -> None:
        assert b.recv(1) == b"x"  # non-blocking: no incident, and the socket moves
        assert type(b) is not socket.socket
        assert isinstance(b, socket.socket)
        assert repr(b).startswith("<socket.socket ")
        assert not hasattr(type(b).recv, "__loophound_original__")
        assert b.recv(1) == b"y"
        b.settimeout(BOUND)  # it can block again: watched again
        assert type(b) is socket.socket
        assert b.recv(1) == b"z"  # marker-recv-again

    only_event(run_captured(main), "socket.recv", "# marker-recv-again")


def test_a_socket_subclass_keeps_its_class(pair: tuple[socket.socket, socket.socket]) -> None:
    """Only exact socket.socket objects move: a subclass (like ssl.SSLSocket) stays as it is."""

    class Mine(socket.socket):
        pass

    _, b = pair
    mine = Mine(b.family, b.type, b.proto, b.detach())
    mine.settimeout(0)

    async def main() -> None:
        with pytest.raises(BlockingIOError):
            mine.recv(1)
        assert type(mine) is Mine

    try:
        assert run_captured(main) == []
    finally:
        mine.close()


def test_socket_recv_into_is_flagged(pair: tuple[socket.socket, socket.socket]) -> None:
    """recv_into on a blocking socket is one socket.recv_into event."""
    a, b = pair
    a.sendall(b"x")
    buffer = bytearray(1)

    async def main() -> None:
        b.recv_into(buffer)  # marker-recv-into

    only_event(run_captured(main), "socket.recv_into", "# marker-recv-into")
    assert buffer == b"x"


def test_socket_send_is_flagged(pair: tuple[socket.socket, socket.socket]) -> None:
    """send on a blocking socket is one socket.send event."""
    a, b = pair

    async def main() -> None:
        a.send(b"x")  # marker-send

    only_event(run_captured(main), "socket.send", "# marker-send")
    assert b.recv(1) == b"x"


def test_socket_sendall_is_flagged(pair: tuple[socket.socket, socket.socket]) -> None:
    """sendall on a blocking socket is one socket.sendall event."""
    a, b = pair

    async def main() -> None:
        a.sendall(b"xy")  # marker-sendall

    only_event(run_captured(main), "socket.sendall", "# marker-sendall")
    assert b.recv(2) == b"xy"


def test_socket_connect_is_flagged(listener: socket.socket) -> None:
    """connect of a blocking socket to a 127.0.0.1 listener is one socket.connect event."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(BOUND)
    address = listener.getsockname()

    async def main() -> None:
        client.connect(address)  # marker-connect

    try:
        events = run_captured(main)
        listener.accept()[0].close()
    finally:
        client.close()
    only_event(events, "socket.connect", "# marker-connect")


def test_socket_accept_is_flagged(listener: socket.socket) -> None:
    """accept on a blocking listener is flagged even with a connection already queued."""
    client = socket.create_connection(listener.getsockname(), timeout=BOUND)
    accepted: list[socket.socket] = []

    async def main() -> None:
        accepted.append(listener.accept()[0])  # marker-accept

    try:
        events = run_captured(main)
    finally:
        client.close()
        for sock in accepted:
            sock.close()
    only_event(events, "socket.accept", "# marker-accept")


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A bound UDP receiver on 127.0.0.1 and a sender, both closed after the test."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.settimeout(BOUND)
    sender.settimeout(BOUND)
    receiver.bind(("127.0.0.1", 0))
    yield receiver, sender
    receiver.close()
    sender.close()


def test_udp_sendto_is_flagged(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    """sendto on a blocking UDP socket is one socket.sendto event."""
    receiver, sender = udp_pair
    address = receiver.getsockname()

    async def main() -> None:
        sender.sendto(b"x", address)  # marker-sendto

    only_event(run_captured(main), "socket.sendto", "# marker-sendto")
    assert receiver.recvfrom(1)[0] == b"x"


def test_udp_recvfrom_is_flagged(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    """recvfrom on a blocking UDP socket is one socket.recvfrom event."""
    receiver, sender = udp_pair
    sender.sendto(b"x", receiver.getsockname())

    async def main() -> None:
        receiver.recvfrom(1)  # marker-recvfrom

    only_event(run_captured(main), "socket.recvfrom", "# marker-recvfrom")


# --- ssl ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost made by the openssl CLI (skip without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed, so no test certificate can be made")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    made = subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", key, "-out", cert, "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr.decode()[-200:]}")
    return cert, key


def _tls_echo(
    listener: socket.socket, context: ssl.SSLContext, errors: list[BaseException]
) -> None:
    """Accept one TLS client and echo what it sends until it closes."""
    try:
        conn, _ = listener.accept()
        conn.settimeout(BOUND)
        with context.wrap_socket(conn, server_side=True) as tls:
            while data := tls.recv(16):
                tls.sendall(data)
    except BaseException as exc:  # reported by the test, never lost in the thread
        errors.append(exc)


def test_ssl_socket_methods_are_flagged(
    certificate: tuple[str, str], listener: socket.socket
) -> None:
    """do_handshake, sendall, recv, write and read of a blocking SSLSocket are each flagged."""
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=cert)
    errors: list[BaseException] = []
    server = threading.Thread(target=_tls_echo, args=(listener, server_context, errors))
    server.start()
    raw = socket.create_connection(listener.getsockname(), timeout=BOUND)
    tls = client_context.wrap_socket(
        raw, server_hostname="localhost", do_handshake_on_connect=False
    )
    received: list[bytes] = []

    async def main() -> None:
        tls.do_handshake()  # marker-ssl-handshake
        tls.sendall(b"a")  # marker-ssl-sendall
        received.append(tls.recv(1))  # marker-ssl-recv
        tls.write(b"b")  # marker-ssl-write
        received.append(tls.read(1))  # marker-ssl-read

    try:
        events = run_captured(main)
    finally:
        tls.close()
        server.join(BOUND)
    assert not server.is_alive()
    assert errors == []
    assert received == [b"a", b"b"]
    expected = [
        ("ssl.do_handshake", "# marker-ssl-handshake"),
        ("ssl.sendall", "# marker-ssl-sendall"),
        ("ssl.recv", "# marker-ssl-recv"),
        ("ssl.write", "# marker-ssl-write"),
        ("ssl.read", "# marker-ssl-read"),
    ]
    found = loud(events)
    assert [(e.operation, e.culprit.lineno if e.culprit else 0) for e in found] == [
        (operation, line_of(marker, __file__)) for operation, marker in expected
    ]
    assert all(e.culprit is not None and e.culprit.filename == __file__ for e in found)


# --- select ------------------------------------------------------------------------


def test_select_with_timeout_is_flagged() -> None:
    """select.select with a positive timeout on the loop is one select.select event."""
    r, w = os.pipe()

    async def main() -> None:
        select.select([r], [], [], SHORT)  # marker-select

    try:
        events = run_captured(main)
    finally:
        os.close(r)
        os.close(w)
    only_event(events, "select.select", "# marker-select")


def test_select_with_zero_timeout_is_not_flagged() -> None:
    """select.select with timeout 0 is a non-blocking check and no incident."""
    r, w = os.pipe()

    async def main() -> None:
        select.select([r], [], [], 0)

    try:
        assert run_captured(main) == []
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif(not hasattr(select, "poll"), reason="select.poll is not available here")
def test_poll_with_timeout_is_flagged() -> None:
    """poll() of a select.poll object with a positive timeout (ms) is one select.poll event."""
    r, w = os.pipe()

    async def main() -> None:
        poller = select.poll()
        poller.register(r, select.POLLIN)
        poller.poll(10)  # marker-poll

    try:
        events = run_captured(main)
    finally:
        os.close(r)
        os.close(w)
    only_event(events, "select.poll", "# marker-poll")


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="select.epoll is Linux only")
def test_epoll_with_timeout_is_flagged() -> None:
    """poll() of a select.epoll object with a positive timeout is one select.epoll event."""
    r, w = os.pipe()

    async def main() -> None:
        with select.epoll() as poller:
            poller.register(r, select.EPOLLIN)
            poller.poll(SHORT)  # marker-epoll

    try:
        events = run_captured(main)
    finally:
        os.close(r)
        os.close(w)
    only_event(events, "select.epoll", "# marker-epoll")


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="select.epoll is Linux only")
def test_epoll_with_zero_timeout_is_not_flagged() -> None:
    """poll(0) of a select.epoll object is a non-blocking check and no incident."""

    async def main() -> None:
        with select.epoll() as poller:
            poller.poll(0)

    assert run_captured(main) == []


# --- threading ---------------------------------------------------------------------


def test_event_wait_on_unset_event_is_flagged() -> None:
    """threading.Event.wait on an unset event with a timeout is one event."""
    event = threading.Event()

    async def main() -> None:
        event.wait(SHORT)  # marker-event-wait

    only_event(run_captured(main), "threading.Event.wait", "# marker-event-wait")


def test_condition_wait_is_flagged() -> None:
    """threading.Condition.wait with a timeout is one event, at the wait, not the lock."""
    condition = threading.Condition()

    async def main() -> None:
        with condition:
            condition.wait(SHORT)  # marker-condition-wait

    only_event(run_captured(main), "threading.Condition.wait", "# marker-condition-wait")


def test_contended_semaphore_acquire_is_flagged() -> None:
    """Semaphore.acquire when no permit is free is one threading.Semaphore.acquire event."""
    semaphore = threading.Semaphore(1)
    semaphore.acquire()

    async def main() -> None:
        semaphore.acquire(timeout=SHORT)  # marker-semaphore

    only_event(run_captured(main), "threading.Semaphore.acquire", "# marker-semaphore")


def test_join_of_a_live_thread_is_flagged() -> None:
    """Thread.join of a thread that is still running is one threading.Thread.join event."""
    release = threading.Event()
    worker = threading.Thread(target=release.wait, args=(BOUND,))
    worker.start()

    async def main() -> None:
        worker.join(SHORT)  # marker-join

    try:
        events = run_captured(main)
    finally:
        release.set()
        worker.join(BOUND)
    assert not worker.is_alive()
    only_event(events, "threading.Thread.join", "# marker-join")


# --- queue and futures -------------------------------------------------------------


def test_get_on_empty_queue_is_flagged() -> None:
    """queue.Queue.get on an empty queue with a timeout is one event."""
    q: queue.Queue[int] = queue.Queue()

    async def main() -> None:
        with pytest.raises(queue.Empty):
            q.get(timeout=SHORT)  # marker-queue-get

    only_event(run_captured(main), "queue.Queue.get", "# marker-queue-get")


def test_put_on_full_queue_is_flagged() -> None:
    """queue.Queue.put on a full bounded queue with a timeout is one event."""
    q: queue.Queue[int] = queue.Queue(maxsize=1)
    q.put(1)

    async def main() -> None:
        with pytest.raises(queue.Full):
            q.put(2, timeout=SHORT)  # marker-queue-put

    only_event(run_captured(main), "queue.Queue.put", "# marker-queue-put")


def test_result_of_pending_future_is_flagged() -> None:
    """concurrent.futures.Future.result on a pending future is one Future.result event."""
    future: concurrent.futures.Future[int] = concurrent.futures.Future()

    async def main() -> None:
        with pytest.raises(concurrent.futures.TimeoutError):
            future.result(timeout=SHORT)  # marker-future-result

    only_event(run_captured(main), "Future.result", "# marker-future-result")


# --- subprocesses and pipes --------------------------------------------------------


def test_popen_wait_is_flagged() -> None:
    """Popen.wait of a child not yet reaped is one subprocess.Popen.wait event."""
    child = subprocess.Popen(["true"])

    async def main() -> None:
        child.wait(timeout=BOUND)  # marker-popen-wait

    try:
        events = run_captured(main)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    only_event(events, "subprocess.Popen.wait", "# marker-popen-wait")


def test_popen_communicate_is_flagged() -> None:
    """Popen.communicate with a real child is one event, though it waits several times."""
    child = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    output: list[bytes] = []

    async def main() -> None:
        output.append(child.communicate(b"hi", timeout=BOUND)[0])  # marker-communicate

    try:
        events = run_captured(main)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert output == [b"hi"]
    only_event(events, "subprocess.Popen.communicate", "# marker-communicate")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A blocking pipe (read end, write end), closed after the test."""
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_os_write_to_blocking_pipe_is_flagged(pipe: tuple[int, int]) -> None:
    """os.write to a blocking pipe is one os.write event."""
    r, w = pipe

    async def main() -> None:
        os.write(w, b"x")  # marker-os-write

    only_event(run_captured(main), "os.write", "# marker-os-write")
    assert os.read(r, 1) == b"x"


def test_os_read_from_blocking_pipe_is_flagged(pipe: tuple[int, int]) -> None:
    """os.read from a blocking pipe is one os.read event even with data waiting."""
    r, w = pipe
    os.write(w, b"x")

    async def main() -> None:
        os.read(r, 1)  # marker-os-read

    only_event(run_captured(main), "os.read", "# marker-os-read")


def test_os_read_from_non_blocking_pipe_is_not_flagged(pipe: tuple[int, int]) -> None:
    """os.read of a non-blocking descriptor cannot wait and is no incident."""
    r, w = pipe
    os.set_blocking(r, False)
    os.write(w, b"x")

    async def main() -> None:
        os.read(r, 1)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)

    assert run_captured(main) == []


def test_os_write_to_stderr_is_not_flagged() -> None:
    """os.write to descriptors 1 and 2 (print-style output) is no incident."""

    async def main() -> None:
        os.write(2, b"")
        os.write(1, b"")

    assert run_captured(main) == []


def test_input_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    """input() on the loop reads the console and is one input event."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("typed\n"))
    answers: list[str] = []

    async def main() -> None:
        answers.append(input())  # marker-input

    only_event(run_captured(main), "input", "# marker-input")
    assert answers == ["typed"]


# --- where the loop runs, and how a call is refused --------------------------------


def test_loop_in_a_worker_thread_is_watched() -> None:
    """time.sleep on a loop run by a non-main thread is flagged with that thread's name."""

    async def main() -> None:
        time.sleep(SHORT)  # marker-worker-sleep

    found = loud(run_captured_in_thread(main, "loop-worker"))
    assert [e.operation for e in found] == ["time.sleep"]
    assert found[0].thread_name == "loop-worker"
    assert found[0].culprit is not None
    assert found[0].culprit.lineno == line_of("# marker-worker-sleep", __file__)


def test_raise_mode_raises_at_the_call_site() -> None:
    """In raise mode a patched call raises BlockingCallError before it runs, at its line."""
    caught: list[BaseException] = []
    event = threading.Event()

    async def main() -> None:
        try:
            event.wait(BOUND)  # marker-raise-wait
        except BlockingCallError as exc:
            caught.append(exc)

    events = run_captured(main, mode="raise")
    assert len(caught) == 1
    line = line_of("# marker-raise-wait", __file__)
    assert f"{__file__}:{line}" in str(caught[0])
    tb = caught[0].__traceback__
    assert tb is not None
    assert tb.tb_frame.f_code.co_name == "main"
    assert tb.tb_lineno == line
    assert loud(events) == []


def test_raise_mode_refuses_time_sleep() -> None:
    """In raise mode time.sleep raises BlockingCallError out of the coroutine."""

    async def main() -> None:
        time.sleep(BOUND)  # marker-raise-sleep

    with pytest.raises(BlockingCallError, match=r"time\.sleep would block the event loop"):
        run_captured(main, mode="raise")


def test_warnings_error_filter_makes_a_call_raise() -> None:
    """Under an 'error' filter for BlockingCallWarning, time.sleep on the loop raises."""
    caught: list[BaseException] = []

    async def main() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error", BlockingCallWarning)
            try:
                time.sleep(BOUND)  # marker-strict-sleep
            except BlockingCallError as exc:
                caught.append(exc)

    run_captured(main)
    assert len(caught) == 1
    assert f"{__file__}:{line_of('# marker-strict-sleep', __file__)}" in str(caught[0])


def test_warnings_filters_are_reread_after_each_catch_warnings_block() -> None:
    """An 'error' filter stops applying when its catch_warnings block ends, even if the
    next block's filter list reuses the old one's memory."""
    outcomes: list[str] = []

    async def main() -> None:
        for strict in (True, False, True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("error" if strict else "ignore", BlockingCallWarning)
                try:
                    time.sleep(SHORT)
                except BlockingCallError:
                    outcomes.append("raised")
                else:
                    outcomes.append("reported")

    events = run_captured(main, rate_limit=100)
    assert outcomes == ["raised", "reported", "raised", "reported"]
    assert len(loud(events)) == 2


def test_calls_off_the_loop_pass_through_untouched() -> None:
    """With a guard installed but no loop running, a patched call is no incident."""
    with loophound.capture(sinks=()) as events:
        time.sleep(SHORT)
        threading.Event().wait(SHORT)
    assert list(events) == []


ALIASES = """
from time import sleep
from time import sleep as _sleep


async def both() -> None:
    sleep(0.001)  # plain alias
    await asyncio.sleep(0)
    _sleep(0.001)  # private alias
"""


def test_names_bound_before_install_are_watched_and_restored(tmp_path: Path) -> None:
    """``from time import sleep`` done before install is watched, and the original is back after."""
    module_path = tmp_path / "loophound_alias_module.py"
    module_path.write_text("import asyncio\n" + ALIASES, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("loophound_alias_module", module_path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        original = time.sleep
        events = run_captured(module.both)
        assert [(e.operation, e.culprit.lineno if e.culprit else 0) for e in loud(events)] == [
            ("time.sleep", line_of("plain alias", str(module_path))),
            ("time.sleep", line_of("private alias", str(module_path))),
        ]
        assert module.sleep is original
        assert module._sleep is original
    finally:
        del sys.modules[spec.name]


_BAD_CALLS = {
    "Event.wait positional": lambda: threading.Event().wait(1, 2),
    "Event.wait keyword": lambda: threading.Event().wait(bogus=1),
    "Condition.wait keyword": lambda: threading.Condition().wait(tmo=1),
    "Semaphore.acquire positional": lambda: threading.Semaphore().acquire(1, 1, 3),
    "Thread.join positional": lambda: threading.Thread().join(1, 2),
    "Future.result positional": lambda: concurrent.futures.Future().result(1, 2),
    "SimpleQueue.get positional": lambda: queue.SimpleQueue().get(1, 0, 1),
    "SimpleQueue.get keyword": lambda: queue.SimpleQueue().get(nope=1),
}


def _error_of(call: Any) -> str:
    try:
        call()
    except TypeError as error:
        return str(error)
    return "no error"


@pytest.mark.parametrize("name", sorted(_BAD_CALLS))
def test_a_bad_call_raises_the_originals_type_error(name: str) -> None:
    """A wrapped primitive called with bad arguments raises the original's TypeError text."""
    expected = _error_of(_BAD_CALLS[name])
    guard = loophound.install(sinks=(), detectors=("patches",))
    try:
        seen = _error_of(_BAD_CALLS[name])
    finally:
        guard.uninstall()
    assert expected != "no error"
    assert seen == expected
