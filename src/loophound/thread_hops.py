"""Thread hops: how often a request went through ``sync_to_async``, and what it cost.

Django runs sync middleware, signal receivers and sync views in asgiref's
thread-sensitive executor: one thread for the whole process by default. A request
that hops there first *waits* for that thread (other requests' sync code is running
on it), then *runs* there. Both are invisible in a trace; this module measures them
per request, for the ASGI middleware, which loads it by name only when asgiref is
already imported.

Two patches on ``asgiref.sync.SyncToAsync``, both process-wide and both inert
outside a request the middleware is serving:

- ``__call__`` (on the loop) notes when the hop was submitted and, when it returns,
  adds the hop to the request's ``ThreadHops``;
- ``thread_handler`` (on the executor's thread) notes when the work started and
  ended there. asgiref binds ``self.thread_handler`` on the loop thread, in the same
  synchronous stretch as ``__call__``'s start, and then runs it on the executor's
  thread without the request's context; a descriptor hands the pending hop from one
  to the other through a thread-local.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ThreadHops", "hops_var", "install"]

_now = time.perf_counter


class ThreadHops:
    """The thread hops of one request: count, seconds waited and seconds run."""

    __slots__ = ("count", "run", "wait")

    def __init__(self) -> None:
        self.count = 0
        self.wait = 0.0
        self.run = 0.0

    def as_dict(self) -> dict[str, float]:
        """Return ``{"count", "wait", "run"}`` (seconds)."""
        return {"count": self.count, "wait": self.wait, "run": self.run}


class _Hop:
    __slots__ = ("ended", "started", "submitted")

    def __init__(self, submitted: float) -> None:
        self.submitted = submitted
        self.started: float | None = None
        self.ended: float | None = None


#: The hops of the request the current task serves (set by the middleware).
hops_var: contextvars.ContextVar[ThreadHops | None] = contextvars.ContextVar(
    "loophound_thread_hops", default=None
)
_pending = threading.local()
_installed: list[tuple[type, str, object]] = []
_install_lock = threading.Lock()


def _timed_call(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
        hops = hops_var.get()
        if hops is None:
            return await original(self, *args, **kwargs)
        hop = _Hop(_now())
        _pending.hop = hop
        try:
            return await original(self, *args, **kwargs)
        finally:
            if getattr(_pending, "hop", None) is hop:
                _pending.hop = None  # raised before it reached the executor
            _add(hops, hop, _now())

    return __call__


def _add(hops: ThreadHops, hop: _Hop, done: float) -> None:
    started = hop.started
    if started is None:  # never ran: cancelled or refused (deadlock guard)
        return
    ended = hop.ended if hop.ended is not None else done
    hops.count += 1
    hops.wait += max(0.0, started - hop.submitted)
    hops.run += max(0.0, ended - started)


class _TimedThreadHandler:
    """``SyncToAsync.thread_handler`` that times the run of the pending hop."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original

    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., Any]:
        bound: Callable[..., Any] = self.original.__get__(instance, owner)
        if instance is None:
            return bound
        hop: _Hop | None = getattr(_pending, "hop", None)
        if hop is None:
            return bound
        _pending.hop = None

        def thread_handler(*args: Any, **kwargs: Any) -> Any:
            hop.started = _now()
            try:
                return bound(*args, **kwargs)
            finally:
                hop.ended = _now()

        return thread_handler


def install() -> bool:
    """Patch asgiref's ``SyncToAsync`` once per process; False if it cannot be."""
    with _install_lock:
        if _installed:
            return True
        try:
            from asgiref.sync import SyncToAsync  # noqa: PLC0415 - only when asgiref is in use
        except ImportError:
            return False
        call = vars(SyncToAsync).get("__call__")
        handler = vars(SyncToAsync).get("thread_handler")
        if not callable(call) or not callable(handler):
            return False  # an asgiref this module does not know: measure nothing
        _installed.append((SyncToAsync, "__call__", call))
        _installed.append((SyncToAsync, "thread_handler", handler))
        SyncToAsync.__call__ = _timed_call(call)  # type: ignore[method-assign]
        SyncToAsync.thread_handler = _TimedThreadHandler(handler)  # type: ignore[method-assign,assignment]
        return True


def uninstall() -> None:
    """Restore asgiref's originals (tests)."""
    with _install_lock:
        while _installed:
            owner, name, original = _installed.pop()
            setattr(owner, name, original)
