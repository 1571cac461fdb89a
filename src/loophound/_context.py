"""Per-task state the detectors read on the loop thread: allow scopes and the request.

Both are context variables, so a scope opened in one task is inherited by the tasks it
starts and never leaks into a sibling task.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, cast, overload

__all__ = [
    "allow_blocking",
    "allowed_reason",
    "current_request",
    "current_span",
    "request_var",
    "set_span_reader",
    "span_in",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The reasons of the open allow scopes of the current task, innermost last.
_allow_var: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "loophound_allow", default=None
)
#: The request being served by the current task (set by the ASGI middleware).
request_var: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "loophound_request", default=None
)

allowed_reason = _allow_var.get
current_request = request_var.get

#: Reads the active trace span's context (set by the OpenTelemetry sink; opaque here, so
#: that the core never imports OpenTelemetry). ``None``: no tracing in use.
_span_reader: Callable[[], object] | None = None


def set_span_reader(reader: Callable[[], object] | None) -> None:
    """Install (or, with ``None``, remove) the reader of the active span's context."""
    global _span_reader
    _span_reader = reader


def current_span() -> object | None:
    """Return the active span's context in this thread's context, if tracing is in use."""
    reader = _span_reader
    if reader is None:
        return None
    try:
        return reader()
    except Exception:
        return None


def span_in(context: object) -> object | None:
    """Return the active span's context in a task's ``contextvars.Context``, if any.

    Runs the reader in a copy: the task's own context may be entered on its loop
    thread right now, and a context cannot be entered twice.
    """
    reader = _span_reader
    if reader is None or not isinstance(context, contextvars.Context):
        return None
    try:
        return context.copy().run(reader)
    except Exception:
        return None


#: Called by the watchdog as a stall begins, with (thread id, start in epoch ns, the
#: ids of the requests it holds up, the active span's context): the otel sink starts
#: the incident's span then, while the victims' spans are certainly still open.
StallListener = Callable[[int, int, tuple[str, ...], object], None]
_stall_listener: StallListener | None = None


def set_stall_listener(listener: StallListener | None) -> None:
    """Install (or, with ``None``, remove) the listener of stalls as they begin."""
    global _stall_listener
    _stall_listener = listener


def stall_listener() -> StallListener | None:
    """Return the listener of stalls as they begin, if any."""
    return _stall_listener


def tracing() -> bool:
    """True while a span reader is installed (the otel sink is in use)."""
    return _span_reader is not None


#: Request id -> its server span, or its task (the span is read from the task's context
#: when needed). Kept by the ASGI middleware only while tracing, for the otel sink to
#: tell a stall's victims which incident delayed them.
request_holders: dict[str, object] = {}

#: Requests in flight per event loop (``id(loop)`` -> request ids), kept by the ASGI
#: middleware; the watchdog copies a loop's set when it stalls: those requests waited.
in_flight: dict[int, set[str]] = {}


class allow_blocking:  # noqa: N801 - used like contextlib's lower-case helpers
    """Allow blocking calls in this scope, for this task and the tasks it starts.

    Use as ``with loophound.allow_blocking("reason"):`` or as a decorator on a sync or
    async function. The reason is required so that the code says why.
    """

    __slots__ = ("_reason", "_tokens")

    def __init__(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise TypeError(
                "loophound.allow_blocking() needs a reason, e.g. "
                "allow_blocking('reads a 1 KB config file once at startup')"
            )
        self._reason = reason
        self._tokens: list[contextvars.Token[tuple[str, ...] | None]] = []

    @property
    def reason(self) -> str:
        """The reason given for allowing blocking here."""
        return self._reason

    def __enter__(self) -> Self:
        current = _allow_var.get() or ()
        self._tokens.append(_allow_var.set((*current, self._reason)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _allow_var.reset(self._tokens.pop())

    @overload
    def __call__(
        self, func: Callable[_P, Coroutine[Any, Any, _R]]
    ) -> Callable[_P, Coroutine[Any, Any, _R]]: ...
    @overload
    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]: ...
    def __call__(self, func: Callable[_P, Any]) -> Callable[_P, Any]:
        reason = self._reason
        if inspect.iscoroutinefunction(func):
            async_func = cast("Callable[_P, Coroutine[Any, Any, Any]]", func)

            @functools.wraps(func)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                with allow_blocking(reason):
                    return await async_func(*args, **kwargs)

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            with allow_blocking(reason):
                return func(*args, **kwargs)

        return wrapper


def allowed_reason_in(context: object) -> tuple[str, ...] | None:
    """Return the allow scopes open in a task's ``contextvars.Context``, if any."""
    if isinstance(context, contextvars.Context):
        return context.get(_allow_var)
    return None


def request_in(context: object) -> Mapping[str, str] | None:
    """Return the request recorded in a task's ``contextvars.Context``, if any."""
    if isinstance(context, contextvars.Context):
        return context.get(request_var)
    return None
