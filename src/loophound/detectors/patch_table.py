"""The patch table: which primitives are wrapped and when a call may wait.

Each entry is data: where the primitive lives, the operation name events carry, and
a predicate with the primitive's own signature that answers "can this call wait?".
A call that cannot wait (``sleep(0)``, ``timeout=0``, a non-blocking socket, an
uncontended semaphore, a non-empty queue) is never an incident. The patch detector
gives some predicates (``_sleep``, ``_socket``, ``_select``, ``_queue_get``,
``_queue_put``, ``_fd_blocks``, the pollers' ``_poller``) a dedicated wrapper that
checks the same condition inline.
"""

from __future__ import annotations

import asyncio.base_events
import os
import selectors
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, NamedTuple

__all__ = ["PATCHES", "PatchSpec", "always", "always_positional"]


class PatchSpec(NamedTuple):
    """One patched primitive: ``owner`` (dotted path) . ``attribute``.

    ``builtin`` marks a method of an immutable C type, written into the type's own
    dict (``builtin_types``) so that objects made before install are watched too;
    skipped where that is not supported.
    """

    owner: str
    attribute: str
    operation: str
    may_wait: Callable[..., bool]
    builtin: bool = False


def _sleep(secs: float, /) -> bool:
    return secs > 0


def _socket(sock: Any, /, *_args: Any, **_kwargs: Any) -> bool:
    return bool(sock.gettimeout() != 0.0)


_RUN_ONCE = asyncio.base_events.BaseEventLoop._run_once.__code__  # type: ignore[attr-defined]
_SELECTOR_CODES = frozenset(
    cls.select.__code__
    for cls in vars(selectors).values()
    if isinstance(cls, type) and issubclass(cls, selectors.BaseSelector) and "select" in vars(cls)
)


def _called_by_loop_selector(depth: int = 2) -> bool:
    """True when the caller is a selector that asyncio's loop iteration is polling.

    ``depth`` is how many frames above this function the patched call's caller is: 2
    when the wrapper itself asks (this function ← wrapper ← caller), 3 from a table
    predicate. Checked by code identity from the caller up (at most three frames: an
    intermediate such as Windows' ``SelectSelector._select`` is allowed), so the loop's
    own poll costs a few attribute reads, not a stack walk. Only asked when the timeout
    is not zero.
    """
    frame: FrameType | None
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return False
    for _ in range(3):
        if frame is None:
            return False
        if frame.f_code in _SELECTOR_CODES:
            back = frame.f_back
            return back is not None and back.f_code is _RUN_ONCE
        frame = frame.f_back
    return False


# "The timeout lets the call wait" (``timeout is None or timeout > 0``) is written out
# in each predicate below: a helper would be one more Python call on every pass-through
# (bench/passthrough.py). ``_sleep``, ``_socket``, ``_select``, ``_poller``,
# ``_queue_get``, ``_queue_put`` and ``_fd_blocks`` are also written out in the patch
# detector's dedicated wrappers; these functions stay the reference for what those
# wrappers check.


def _select(_r: Any, _w: Any, _x: Any, timeout: float | None = None, /) -> bool:
    return (timeout is None or timeout > 0) and not _called_by_loop_selector(3)


def _poller(_self: Any, timeout: float | None = None, *_args: Any, **kwargs: Any) -> bool:
    timeout = kwargs.get("timeout", timeout)
    return (timeout is None or timeout != 0) and not _called_by_loop_selector(3)


def _event_wait(event: Any, timeout: float | None = None) -> bool:
    return not event._flag and (timeout is None or timeout > 0)


def _condition_wait(_cond: Any, timeout: float | None = None) -> bool:
    return timeout is None or timeout > 0


def _semaphore_acquire(sem: Any, blocking: bool = True, timeout: float | None = None) -> bool:
    return blocking and (timeout is None or timeout > 0) and sem._value <= 0


#: A lock that another thread releases within this long is contention, not blocking:
#: Django hands every request to a worker thread through a lock-guarded queue, and
#: logging handlers share a lock with every thread that logs. A wait past this floor
#: is an incident, timed from the first attempt.
LOCK_WAIT_FLOOR = 0.001


def _lock_acquire(_lock: Any, blocking: bool = True, timeout: float = -1) -> bool:
    """The call may wait; whether another thread holds the lock, the wrapper's own
    non-blocking first attempt tells (an incident only past ``LOCK_WAIT_FLOOR``)."""
    return bool(blocking) and timeout != 0


def _lock_enter(_lock: Any) -> bool:
    """``with lock:`` waits like ``lock.acquire()``."""
    return True


def _thread_join(thread: Any, timeout: float | None = None) -> bool:
    return (timeout is None or timeout > 0) and bool(thread.is_alive())


def _queue_get(q: Any, block: bool = True, timeout: float | None = None) -> bool:
    return block and (timeout is None or timeout > 0) and not q._qsize()


def _queue_put(q: Any, _item: Any, block: bool = True, timeout: float | None = None) -> bool:
    return block and (timeout is None or timeout > 0) and 0 < q.maxsize <= q._qsize()


def _simple_queue_get(q: Any, block: bool = True, timeout: float | None = None) -> bool:
    return block and (timeout is None or timeout > 0) and q.empty()


_PENDING_STATES = frozenset({"PENDING", "RUNNING"})


def _future_result(future: Any, timeout: float | None = None) -> bool:
    return future._state in _PENDING_STATES and (timeout is None or timeout > 0)


def _popen_wait(popen: Any, timeout: float | None = None) -> bool:
    return popen.returncode is None and (timeout is None or timeout > 0)


def _popen_communicate(_popen: Any, _input: Any = None, timeout: float | None = None) -> bool:
    return timeout is None or timeout > 0


_STD_STREAMS = frozenset({1, 2})
_get_blocking = os.get_blocking


def _fd_blocks(fd: int, _arg: Any, /) -> bool:
    if fd in _STD_STREAMS:
        return False
    try:
        return _get_blocking(fd)
    except (OSError, TypeError):
        return False  # a bad fd: let the original raise its own error


def always(*_args: Any, **_kwargs: Any) -> bool:
    """Every call may wait (``input``, a database query)."""
    return True


def always_positional(*_args: Any) -> bool:
    """Every call may wait, and the primitive takes positional arguments only."""
    return True


_SOCKET_METHODS = (
    "accept",
    "connect",
    "recv",
    "recv_into",
    "recvfrom",
    "recvfrom_into",
    "recvmsg",
    "send",
    "sendall",
    "sendto",
    "sendmsg",
)
_SSL_METHODS = ("recv", "recv_into", "read", "write", "send", "sendall", "do_handshake", "connect")

_SQLITE_METHODS = (
    ("sqlite3.Connection", ("execute", "executemany", "executescript", "commit", "rollback")),
    ("sqlite3.Cursor", ("execute", "executemany", "executescript")),
)

PATCHES: tuple[PatchSpec, ...] = (
    PatchSpec("time", "sleep", "time.sleep", _sleep),
    *(PatchSpec("socket.socket", m, f"socket.{m}", _socket) for m in _SOCKET_METHODS),
    *(PatchSpec("ssl.SSLSocket", m, f"ssl.{m}", _socket) for m in _SSL_METHODS),
    PatchSpec("select", "select", "select.select", _select),
    PatchSpec("threading.Event", "wait", "threading.Event.wait", _event_wait),
    PatchSpec("threading.Condition", "wait", "threading.Condition.wait", _condition_wait),
    PatchSpec("threading.Semaphore", "acquire", "threading.Semaphore.acquire", _semaphore_acquire),
    PatchSpec("threading.Thread", "join", "threading.Thread.join", _thread_join),
    PatchSpec("queue.Queue", "get", "queue.Queue.get", _queue_get),
    PatchSpec("queue.Queue", "put", "queue.Queue.put", _queue_put),
    PatchSpec("concurrent.futures.Future", "result", "Future.result", _future_result),
    PatchSpec("concurrent.futures.Future", "exception", "Future.exception", _future_result),
    PatchSpec("subprocess.Popen", "wait", "subprocess.Popen.wait", _popen_wait),
    PatchSpec(
        "subprocess.Popen", "communicate", "subprocess.Popen.communicate", _popen_communicate
    ),
    PatchSpec("os", "read", "os.read", _fd_blocks),
    PatchSpec("os", "write", "os.write", _fd_blocks),
    PatchSpec("builtins", "input", "input", always),
    # Locks and sqlite3 objects are often made at import time, before install: their
    # C types' methods are replaced so that those are watched too.
    PatchSpec("_thread.LockType", "acquire", "threading.Lock.acquire", _lock_acquire, builtin=True),
    PatchSpec("_thread.LockType", "__enter__", "threading.Lock.acquire", _lock_enter, builtin=True),
    PatchSpec("_thread.RLock", "acquire", "threading.RLock.acquire", _lock_acquire, builtin=True),
    PatchSpec("_thread.RLock", "__enter__", "threading.RLock.acquire", _lock_enter, builtin=True),
    PatchSpec(
        "_queue.SimpleQueue", "get", "queue.SimpleQueue.get", _simple_queue_get, builtin=True
    ),
    *(
        # Positional only: a keyword raises TypeError, as it does from the original.
        PatchSpec(owner, m, f"sqlite3.{m}", always_positional, builtin=True)
        for owner, methods in _SQLITE_METHODS
        for m in methods
    ),
)

#: Poller objects made by these factories get a watched ``poll`` method.
POLLER_FACTORIES: tuple[tuple[str, str], ...] = (("select", "poll"), ("select", "epoll"))
POLL_PREDICATE = _poller
