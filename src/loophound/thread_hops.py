"""Thread hops: how often a request went through ``sync_to_async``, and what it cost.

Django runs sync middleware, signal receivers and sync views in asgiref's
thread-sensitive executor: one thread for the whole process by default. A request
that hops there first *waits* for that thread (other requests' sync code is running
on it), then *runs* there. Both are invisible in a trace; this module measures them
per request, for the ASGI middleware, which loads it by name only when asgiref is
already imported.

One patch on ``asgiref.sync.SyncToAsync``, process-wide and inert outside a request
the middleware is serving: ``thread_handler`` becomes a descriptor. asgiref binds
``self.thread_handler`` on the loop thread, in ``__call__``, just before it submits
the hop to the executor, and in the request's context: binding notes the request's
``ThreadHops`` and the submission time; the bound handler, on the executor's thread,
notes when the work started and ended there and adds the hop. No coroutine wraps
``__call__``, so a hop costs the same number of awaits as without loophound.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ThreadHops", "hops_var", "install"]

_now = time.perf_counter


class ThreadHops:
    """The thread hops of one request: count, seconds waited and seconds run.

    Hops end on executor threads, several at once when a request gathers
    ``sync_to_async`` calls: each adds one ``(wait, run)`` pair with ``list.append``,
    which needs no lock; the totals are read once, when the request ends.
    """

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done: list[tuple[float, float]] = []

    def add(self, wait: float, run: float) -> None:
        """Add one hop that waited ``wait`` and ran ``run`` seconds (any thread)."""
        self._done.append((wait, run))

    @property
    def count(self) -> int:
        """How many hops ran."""
        return len(self._done)

    @property
    def wait(self) -> float:
        """Seconds the hops waited for their thread."""
        return sum(wait for wait, _ in self._done[:])

    @property
    def run(self) -> float:
        """Seconds the hops ran on their thread."""
        return sum(run for _, run in self._done[:])

    def as_dict(self) -> dict[str, float]:
        """Return ``{"count", "wait", "run"}`` (seconds)."""
        done = self._done[:]
        return {
            "count": len(done),
            "wait": sum(wait for wait, _ in done),
            "run": sum(run for _, run in done),
        }


#: The hops of the request the current task serves (set by the middleware).
hops_var: contextvars.ContextVar[ThreadHops | None] = contextvars.ContextVar(
    "loophound_thread_hops", default=None
)
_installed: list[tuple[type, str, object]] = []
_install_lock = threading.Lock()


class _TimedThreadHandler:
    """``SyncToAsync.thread_handler`` that times the hop it is bound for."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original

    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., Any]:
        bound: Callable[..., Any] = self.original.__get__(instance, owner)
        if instance is None:
            return bound
        hops = hops_var.get()
        if hops is None:
            return bound
        submitted = _now()

        def thread_handler(*args: Any, **kwargs: Any) -> Any:
            started = _now()
            try:
                return bound(*args, **kwargs)
            finally:
                hops.add(max(0.0, started - submitted), _now() - started)

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
        handler = vars(SyncToAsync).get("thread_handler")
        if not callable(handler):
            return False  # an asgiref this module does not know: measure nothing
        _installed.append((SyncToAsync, "thread_handler", handler))
        SyncToAsync.thread_handler = _TimedThreadHandler(handler)  # type: ignore[method-assign,assignment]
        return True


def uninstall() -> None:
    """Restore asgiref's originals (tests)."""
    with _install_lock:
        while _installed:
            owner, name, original = _installed.pop()
            setattr(owner, name, original)
