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

__all__ = ["allow_blocking", "allowed_reason", "current_request", "request_var"]

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
