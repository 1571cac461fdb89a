"""Pass-through cost: a patched primitive that cannot block, against the original.

    python bench/passthrough.py [--repeats N] [--batch-ms MS] [--write]

For every primitive the run measures, in this one process:

* the original callable, captured before ``loophound.install``;
* the patched callable off a loop thread (plain synchronous code, no running loop);
* the patched callable on a loop thread (inside a coroutine run by ``asyncio.run``),
  called in a way that cannot block (``sleep(0)``, ``timeout=0``, a set event, a
  non-blocking socket or pipe, a finished thread or process, a free lock, ...).
  ``sqlite3`` calls always count as blocking on a loop thread: only their off-loop
  cost is measured.

Baseline and variant run in alternating rounds (which one goes first alternates too),
each round a ``timeit`` batch of the same statement with ``f`` bound to the original
or to the patched callable, so both sides have the same call shape. The reported
extra cost is the median of the per-round differences, with their interquartile
range. Budget: 300 ns, 500 ns for ``os.read``/``os.write`` (they ask the kernel
whether the fd blocks). Only the patch detector is installed: the audit hook cannot be
removed once added, so it would load the baseline as well.

``--write`` replaces the ``passthrough`` section of docs/benchmarks.md (between
``<!-- passthrough:begin -->`` and ``<!-- passthrough:end -->``) and keeps the rest.
The exit status is 1 when a primitive misses its budget.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import queue
import select
import shlex
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loophound
from _common import environment, write_section

BUDGET_NS = 300
FD_BUDGET_NS = 500
#: A jittery row runs up to this many times ``--repeats`` rounds (see ``_uncertain``).
MAX_REPEATS_FACTOR = 8
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BEGIN = "<!-- passthrough:begin -->"
END = "<!-- passthrough:end -->"


@dataclass(frozen=True)
class Case:
    """One row: ``stmt`` calls ``f``, the original or the patched callable."""

    primitive: str
    call: str  # how the call reads in user code
    stmt: str
    resolve: Callable[[], Callable[..., Any]]  # the current (original or patched) callable
    budget: int = BUDGET_NS
    on_loop: bool = True  # False: every call on a loop thread is an incident
    #: Shown, never judged: the call's own jitter is larger than the budget
    #: (``time.sleep(0)``, a system call); another row times the wrapper itself.
    informational: bool = False


@dataclass
class Row:
    case: Case
    number: int
    baseline: list[float]  # ns/call, off loop
    off: list[float]  # per-round differences, ns/call
    on: list[float]

    @property
    def passed(self) -> bool:
        if self.case.informational:
            return True
        worst = max(statistics.median(d) for d in (self.off, self.on) if d)
        return worst <= self.case.budget

    @property
    def verdict(self) -> str:
        """PASS or FAIL on the medians; noisy when the rounds could not resolve the budget."""
        if self.case.informational:
            return "not judged (the call's jitter; see the next row)"
        noisy = _uncertain(self.off, self.case.budget) or (
            bool(self.on) and _uncertain(self.on, self.case.budget)
        )
        return ("PASS" if self.passed else "**FAIL**") + (" (noisy)" if noisy else "")


def _attr(owner: Any, name: str) -> Callable[[], Callable[..., Any]]:
    return lambda: getattr(owner, name)


def _noop_sleep(secs: float, /) -> None:
    """Stands in for time.sleep, whose 0 s call is a ~70 µs system call here."""


def _sleep_wrapper_only() -> Callable[[], Callable[..., Any]]:
    """The time.sleep wrapper built around a no-op: only loophound's cost is timed."""
    from loophound.detectors.patch_table import PATCHES
    from loophound.detectors.patches import _wrap

    spec = next(p for p in PATCHES if p.operation == "time.sleep")
    wrapped = _wrap(spec.operation, _noop_sleep, spec.may_wait)
    return lambda: wrapped if loophound.active_guard() is not None else _noop_sleep


class _PlainSocket(socket.socket):
    """A socket whose methods are pinned to the originals: ``sock.recv`` without loophound."""

    recv = socket.socket.recv
    send = socket.socket.send
    accept = socket.socket.accept


#: The other end of each benchmark socket, to drain what a ``send`` case wrote.
PEERS: dict[int, socket.socket] = {}


def _socket_pair(cls: type[socket.socket], stack: contextlib.ExitStack, data: bytes) -> Any:
    a, b = socket.socketpair()
    sock = cls(a.family, a.type, a.proto, a.detach())
    sock.setblocking(False)  # noqa: FBT003
    b.setblocking(False)  # noqa: FBT003
    if data:
        b.send(data)
    PEERS[id(sock)] = b  # exact sockets have no __dict__ for a .peer attribute
    stack.callback(sock.close)
    stack.callback(b.close)
    return sock


def _socket_listener(cls: type[socket.socket], stack: contextlib.ExitStack) -> Any:
    sock = cls(socket.AF_INET, socket.SOCK_STREAM)
    stack.callback(sock.close)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)  # noqa: FBT003
    return sock


def _sockets(plain: Any, watched: Any) -> Callable[[], Any]:
    """``f`` is a socket: the plain one before install, the watched one after."""
    return lambda: watched if loophound.active_guard() is not None else plain


class Fixtures:
    """Objects the statements use, all in a state where no call can wait."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.sa, self.sb = socket.socketpair()
        stack.callback(self.sa.close)
        stack.callback(self.sb.close)
        self.sa.setblocking(False)  # noqa: FBT003
        self.sb.setblocking(False)  # noqa: FBT003
        # ``sock.recv(...)`` as user code writes it: one socket of each kind per case.
        self.sockets = {
            kind: (
                _socket_pair(_PlainSocket, stack, data),
                # An exact socket.socket, as the program's own: loophound treats those
                # (non-blocking ones leave the wrappers' way after their first call).
                _socket_pair(socket.socket, stack, data),
            )
            for kind, data in (("empty", b""), ("waiting", b"x"))
        }
        self.listeners = (
            _socket_listener(_PlainSocket, stack),
            _socket_listener(socket.socket, stack),
        )
        # A pair with one byte always waiting: MSG_PEEK reads it without taking it.
        self.pa, self.pb = socket.socketpair()
        stack.callback(self.pa.close)
        stack.callback(self.pb.close)
        self.pb.setblocking(False)  # noqa: FBT003
        self.pa.send(b"x")
        self.listener = socket.socket()
        stack.callback(self.listener.close)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.setblocking(False)  # noqa: FBT003
        self.rfd, self.wfd = os.pipe()
        stack.callback(os.close, self.rfd)
        stack.callback(os.close, self.wfd)
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        self.event_set = threading.Event()
        self.event_set.set()
        self.event_unset = threading.Event()
        self.cond = threading.Condition()
        self.sem = threading.Semaphore(1)
        self.queue: queue.Queue[int] = queue.Queue()
        self.thread = threading.Thread(target=lambda: None)
        self.thread.start()
        self.thread.join()
        self.future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self.future.set_result(1)
        self.proc = subprocess.Popen([sys.executable, "-c", "pass"])
        self.proc.wait()
        self.raw_epoll = select.epoll() if hasattr(select, "epoll") else None
        if self.raw_epoll is not None:
            stack.callback(self.raw_epoll.close)
        self.watched_epoll: Any = None  # made by the patched factory after install
        # Originals the statements use to undo a call's effect (refill, drain).
        self.recv0 = socket.socket.recv
        self.peers = PEERS
        self.os_read0 = os.read
        self.os_write0 = os.write
        self.put0 = queue.Queue.put
        self.get0 = queue.Queue.get
        # Made before install, like a module-level lock or a start-up connection.
        self.lock = threading.Lock()
        self.rlock = threading.RLock()
        self.simple_queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.db = sqlite3.connect(":memory:")
        stack.callback(self.db.close)

    def names(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def cases(fx: Fixtures) -> list[Case]:
    nonblocking = "try:\n    {call}\nexcept BlockingIOError:\n    pass"
    rows = [
        Case("time.sleep", "time.sleep(0)", "f(0)", _attr(time, "sleep"), informational=True),
        Case(
            "time.sleep",
            "sleep(0), wrapper around a no-op stand-in",
            "f(0)",
            _sleep_wrapper_only(),
        ),
        Case(
            "socket.recv",
            "sock.recv(1, MSG_PEEK)  # non-blocking, data waiting",
            "f.recv(1, 2)",
            _sockets(*fx.sockets["waiting"]),
        ),
        Case(
            "socket.recv",
            "sock.recv(1)  # non-blocking, no data",
            nonblocking.format(call="f.recv(1)"),
            _sockets(*fx.sockets["empty"]),
        ),
        Case(
            "socket.send",
            "sock.send(b'x')  # non-blocking",
            "f.send(b'x'); recv0(peers[id(f)], 1)",
            _sockets(*fx.sockets["empty"]),
        ),
        Case(
            "socket.accept",
            "listener.accept()  # non-blocking, none pending",
            nonblocking.format(call="f.accept()"),
            _sockets(*fx.listeners),
        ),
        Case(
            "select.select",
            "select.select([], [], [], 0)",
            "f([], [], [], 0)",
            _attr(select, "select"),
        ),
        Case(
            "threading.Event.wait",
            "event.wait()  # set",
            "f(event_set)",
            _attr(threading.Event, "wait"),
        ),
        Case(
            "threading.Event.wait",
            "event.wait(timeout=0)  # not set",
            "f(event_unset, 0)",
            _attr(threading.Event, "wait"),
        ),
        Case(
            "threading.Condition.wait",
            "with cond: cond.wait(timeout=0)",
            "with cond:\n    f(cond, 0)",
            _attr(threading.Condition, "wait"),
        ),
        Case(
            "threading.Semaphore.acquire",
            "sem.acquire(); sem.release()  # uncontended",
            "f(sem); sem.release()",
            _attr(threading.Semaphore, "acquire"),
        ),
        Case(
            "threading.Thread.join",
            "thread.join()  # finished",
            "f(thread)",
            _attr(threading.Thread, "join"),
        ),
        Case(
            "queue.Queue.get",
            "q.get()  # not empty",
            "put0(queue, 1); f(queue)",
            _attr(queue.Queue, "get"),
        ),
        Case(
            "queue.Queue.put",
            "q.put(1)  # unbounded",
            "f(queue, 1); get0(queue)",
            _attr(queue.Queue, "put"),
        ),
        Case(
            "Future.result",
            "future.result()  # done",
            "f(future)",
            _attr(concurrent.futures.Future, "result"),
        ),
        Case(
            "Future.exception",
            "future.exception()  # done",
            "f(future)",
            _attr(concurrent.futures.Future, "exception"),
        ),
        Case(
            "subprocess.Popen.wait",
            "proc.wait()  # finished",
            "f(proc)",
            _attr(subprocess.Popen, "wait"),
        ),
        Case(
            "subprocess.Popen.communicate",
            "proc.communicate(timeout=0)  # finished",
            "f(proc, None, 0)",
            _attr(subprocess.Popen, "communicate"),
        ),
        Case(
            "threading.Lock.acquire",
            "lock.acquire(); lock.release()  # free",
            "f(lock); lock.release()",
            _attr(type(fx.lock), "acquire"),
        ),
        Case(
            "threading.Lock.__enter__",
            "with lock: ...  # free (enter only)",
            "f(lock); lock.release()",
            _attr(type(fx.lock), "__enter__"),
        ),
        Case(
            "threading.RLock.acquire",
            "rlock.acquire(); rlock.release()  # free",
            "f(rlock); rlock.release()",
            _attr(type(fx.rlock), "acquire"),
        ),
        Case(
            "queue.SimpleQueue.get",
            "sq.get()  # not empty",
            "simple_queue.put(1); f(simple_queue)",
            _attr(queue.SimpleQueue, "get"),
        ),
        Case(
            "sqlite3.Connection.execute",
            "conn.execute('SELECT 1')  # off the loop only",
            "f(db, 'SELECT 1')",
            _attr(sqlite3.Connection, "execute"),
            on_loop=False,
        ),
        Case(
            "os.read",
            "os.read(fd, 1)  # non-blocking pipe",
            "os_write0(wfd, b'x'); f(rfd, 1)",
            _attr(os, "read"),
            FD_BUDGET_NS,
        ),
        Case(
            "os.write",
            "os.write(fd, b'x')  # non-blocking pipe",
            "f(wfd, b'x'); os_read0(rfd, 1)",
            _attr(os, "write"),
            FD_BUDGET_NS,
        ),
    ]
    if fx.raw_epoll is not None:
        rows.insert(
            5,
            Case(
                "select.epoll.poll",
                "ep.poll(0)",
                "f(0)",
                lambda: (fx.watched_epoll or fx.raw_epoll).poll,
            ),
        )
    return rows


def per_call_ns(stmt: str, names: dict[str, Any], f: Callable[..., Any], number: int) -> float:
    timer = timeit.Timer(stmt, globals={**names, "f": f})
    return timer.timeit(number) * 1e9 / number


def calibrate(stmt: str, names: dict[str, Any], f: Callable[..., Any], batch_s: float) -> int:
    """Return a loop count whose batch takes about ``batch_s`` with ``f``."""
    number = 100
    while True:
        elapsed = timeit.Timer(stmt, globals={**names, "f": f}).timeit(number)
        if elapsed >= batch_s / 10 or number >= 10_000_000:
            return max(100, min(10_000_000, int(number * batch_s / max(elapsed, 1e-9))))
        number *= 10


def rounds(
    stmt: str,
    names: dict[str, Any],
    original: Callable[..., Any],
    patched: Callable[..., Any],
    number: int,
    repeats: int,
    budget: int,
) -> tuple[list[float], list[float]]:
    """Alternate baseline and variant batches; return baselines and differences."""
    per_call_ns(stmt, names, original, number // 10 or 1)  # warm up both sides
    per_call_ns(stmt, names, patched, number // 10 or 1)
    baselines: list[float] = []
    diffs: list[float] = []
    i = 0
    while i < repeats or (i < repeats * MAX_REPEATS_FACTOR and _uncertain(diffs, budget)):
        if i % 2 == 0:
            base = per_call_ns(stmt, names, original, number)
            variant = per_call_ns(stmt, names, patched, number)
        else:
            variant = per_call_ns(stmt, names, patched, number)
            base = per_call_ns(stmt, names, original, number)
        baselines.append(base)
        diffs.append(variant - base)
        i += 1
    return baselines, diffs


def _uncertain(diffs: list[float], budget: int) -> bool:
    """True while the median's standard error exceeds a tenth of the budget.

    Slow, jittery calls (``time.sleep(0)`` is a system call that may yield the CPU)
    get more rounds, in pairs so that each side goes first equally often.
    """
    if len(diffs) % 2:
        return True
    q1, _, q3 = statistics.quantiles(diffs, n=4, method="inclusive")
    sigma = (q3 - q1) / 1.349
    return 1.2533 * sigma / len(diffs) ** 0.5 > budget / 10


def measure(
    repeats: int, batch_s: float, only: str | None, progress: Callable[[str], None]
) -> list[Row]:
    with contextlib.ExitStack() as stack:
        fx = Fixtures(stack)
        table = [c for c in cases(fx) if only is None or only in c.primitive]
        originals = [case.resolve() for case in table]
        names = fx.names()
        numbers = [
            calibrate(c.stmt, names, o, batch_s) for c, o in zip(table, originals, strict=True)
        ]
        guard = loophound.install(sinks=(), detectors=("patches",))
        stack.callback(guard.uninstall)
        if fx.raw_epoll is not None:
            fx.watched_epoll = select.epoll()
            stack.callback(fx.watched_epoll.close)
        names = fx.names()
        patched = [case.resolve() for case in table]
        for case, original, wrapper in zip(table, originals, patched, strict=True):
            marked = wrapper.recv if isinstance(wrapper, socket.socket) else wrapper
            if isinstance(wrapper, socket.socket):
                marked = socket.socket.recv  # the class the watched socket starts in
            if getattr(marked, "__loophound_original__", None) is None or wrapper is original:
                raise SystemExit(f"passthrough: {case.primitive} is not patched")

        rows: list[Row] = []
        for case, original, wrapper, number in zip(table, originals, patched, numbers, strict=True):
            progress(f"{case.call} (x{number})")
            baseline, off = rounds(
                case.stmt, names, original, wrapper, number, repeats, case.budget
            )

            async def on_loop(
                case: Case = case,
                original: Any = original,
                wrapper: Any = wrapper,
                number: int = number,
            ) -> list[float]:
                assert asyncio.get_running_loop() is not None
                return rounds(case.stmt, names, original, wrapper, number, repeats, case.budget)[1]

            on = asyncio.run(on_loop()) if case.on_loop else []
            rows.append(Row(case, number, baseline, off, on))
        stats = guard.stats
        if getattr(stats, "incidents", 0):
            raise SystemExit(f"passthrough: a call took the slow path ({stats})")
    return rows


def _spread(values: list[float]) -> str:
    if not values:
        return "— (incident)"
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{statistics.median(values):+.0f} ({q1:+.0f} … {q3:+.0f})"


def render(rows: list[Row], command: str, repeats: int) -> str:
    lines = [
        BEGIN,
        "## Pass-through cost of a patched primitive",
        "",
        f"Command: `{command}`",
        "",
        *(f"- {key}: {value}" for key, value in environment()),
        "",
        f"At least {repeats} alternating rounds per context (rounds: off/on loop; a jittery",
        "row gets more); extra = patched minus original, ns per call, median of the",
        "per-round differences (interquartile range in brackets).",
        "Budget: 300 ns, 500 ns for `os.read`/`os.write`. `time.sleep(0)` is a system call",
        "whose jitter (microseconds) is far above the budget: its row is shown, not judged;",
        "the next row times the same wrapper around a no-op.",
        "",
        (
            "| primitive | call (cannot block) | original ns/call | extra off loop ns "
            "| extra on loop ns | rounds | budget ns | result |"
        ),
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    lines.extend(
        f"| `{row.case.primitive}` | `{row.case.call}` "
        f"| {statistics.median(row.baseline):.0f} | {_spread(row.off)} | {_spread(row.on)} "
        f"| {len(row.off)}/{len(row.on) or '—'} | {row.case.budget} "
        f"| {row.verdict} |"
        for row in rows
    )
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="alternating rounds (15)")
    parser.add_argument(
        "--batch-ms", type=float, default=40.0, help="target duration of one timed batch (40)"
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--only", help="rows whose primitive contains this text (no --write)")
    args = parser.parse_args(argv)
    if args.only is not None and args.write:
        parser.error("--only measures part of the table; it cannot be written")
    if args.repeats < 4:
        parser.error("--repeats must be at least 4 (the spread needs quartiles)")

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    rows = measure(args.repeats, args.batch_ms / 1000, args.only, progress)
    command = shlex.join(["python", "bench/passthrough.py", *(argv or sys.argv[1:])])
    section = render(rows, command, args.repeats)
    print(section)
    if args.write:
        write_section("passthrough", section)
        print(f"wrote {DOC}", file=sys.stderr)
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
