"""The patch detector: wraps the primitives of the patch table while installed.

A wrapper costs one C call (``asyncio._get_running_loop``) when it runs off a loop
thread, plus the table's predicate on a loop thread (written out inline in the
dedicated wrappers of the hottest primitives); only a call that may wait takes the
slow path (stack walk, timing, report). Activation is all or nothing: if one
patch fails, the ones already applied are rolled back.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import logging
import socket
import sys
import threading
import time
from asyncio.events import _get_running_loop
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any, Self

from loophound._frames import THREAD_START_CODE
from loophound._recorder import RawIncident, Recorder
from loophound.detectors import builtin_types
from loophound.detectors.patch_table import (
    _PENDING_STATES,
    _STD_STREAMS,
    LOCK_WAIT_FLOOR,
    PATCHES,
    POLLER_FACTORIES,
    PatchSpec,
    _called_by_loop_selector,
    _condition_wait,
    _event_wait,
    _fd_blocks,
    _future_result,
    _get_blocking,
    _lock_acquire,
    _lock_enter,
    _queue_get,
    _queue_put,
    _select,
    _semaphore_acquire,
    _sleep,
    _socket,
    _thread_join,
    always_positional,
)
from loophound.exceptions import BlockingCallError

__all__ = ["PatchDetector"]

logger = logging.getLogger("loophound")
_get_ident = threading.get_ident
_perf_ns = time.perf_counter_ns
_MISSING = object()

#: The recorder every wrapper reports to; ``None`` makes wrappers pass straight through
#: (objects made while installed, such as pollers, outlive an uninstall).
_recorder: Recorder | None = None
_failed = False


def _disable() -> None:
    global _recorder, _failed
    _recorder = None
    if not _failed:
        _failed = True
        logger.exception("loophound: the patch detector failed and is disabled")  # noqa: LOG004


def _begin(recorder: Recorder, operation: str, frame: FrameType) -> RawIncident | None:
    """Ask the recorder about a call about to wait; its failure disables the detector."""
    try:
        return recorder.begin(operation, "patches", None, frame)
    except BlockingCallError:
        raise
    except Exception:
        _disable()
        return None


def _blocking_call(
    recorder: Recorder,
    operation: str,
    original: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    tid = _get_ident()
    busy = recorder.busy
    if tid in busy:  # inside another primitive loophound is already timing
        return original(*args, **kwargs)
    busy.add(tid)
    try:
        frame = sys._getframe(2)
        if frame.f_code is THREAD_START_CODE:
            # Thread.start's wait for its new thread: machinery, as the recorder's walk
            # would find, known here before the walk and the timing. Django starts two
            # threads per request; the short cut saves both walks (bench/load).
            recorder.stats.machinery += 1
            return original(*args, **kwargs)
        raw = _begin(recorder, operation, frame)
        start = _perf_ns()
        try:
            return original(*args, **kwargs)
        finally:
            if raw is not None:
                raw.duration = (_perf_ns() - start) / 1e9
                recorder.submit(raw)
    except BaseException:
        args = kwargs = None  # type: ignore[assignment]  # no cycle through the traceback
        raise
    finally:
        busy.discard(tid)


def _wrap(
    operation: str, original: Callable[..., Any], may_wait: Callable[..., bool]
) -> Callable[..., Any]:
    dedicated = _DEDICATED.get(may_wait)
    if dedicated is not None:
        return _finish(dedicated(operation, original), original)
    by_signature = _BY_SIGNATURE.get(may_wait)
    if by_signature is not None:
        return _finish(by_signature(operation, original, may_wait), original)

    # ``f(*args, **kwargs)`` copies kwargs into a new dict on every call; most calls
    # pass none, so the pass-through paths call ``f(*args)`` then (bench/passthrough.py).
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            recorder = _recorder
            if recorder is None or _get_running_loop() is None:
                return original(*args, **kwargs) if kwargs else original(*args)
            try:
                waits = may_wait(*args, **kwargs) if kwargs else may_wait(*args)
            except Exception:
                waits = False  # bad arguments: the original raises its own error
            if not waits:
                return original(*args, **kwargs) if kwargs else original(*args)
            return _blocking_call(recorder, operation, original, args, kwargs)
        except BaseException:
            # The traceback keeps this frame: holding ``args`` would make a reference
            # cycle with an exception the object stores (``Future.result``), left to
            # the garbage collector. The original's own frame clears ``self`` alike.
            args = kwargs = None  # type: ignore[assignment]
            raise

    return _finish(wrapper, original)


# Dedicated wrappers: the table predicate's check written out inline, so that a
# pass-through is one Python frame and no predicate call (bench/passthrough.py). Each
# checks exactly what its table predicate (patch_table) checks.


def _wrap_sleep(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``time.sleep``: ``_sleep`` inline (``secs > 0``)."""

    def sleep(secs: Any = _MISSING, /) -> Any:
        if secs is _MISSING:  # a bad call: the original raises its own error
            return original()
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(secs)
        try:
            waits = secs > 0
        except Exception:
            waits = False
        if not waits:
            return original(secs)
        return _blocking_call(recorder, operation, original, (secs,), {})

    return sleep


class _NonBlockingSocket(socket.socket):
    """A ``socket.socket`` whose timeout is 0: its methods are the unwrapped originals.

    A non-blocking socket can never block the loop, so the wrapper moves it to this
    class (same layout, ``__class__`` assignment) the first time it sees one: later
    calls, and the ``BlockingIOError`` they raise, never pass through a Python frame
    of loophound's (an exception crossing one costs ~200 ns; bench/passthrough.py).
    ``settimeout``/``setblocking`` move it back when it can block again. Only exact
    ``socket.socket`` objects move: subclasses (``ssl.SSLSocket``) keep their class.
    """

    __slots__ = ()

    def settimeout(self, value: float | None) -> None:
        """Set the timeout; a socket that can block again goes back to being watched."""
        super().settimeout(value)
        if value != 0.0:
            self.__class__ = socket.socket  # type: ignore[assignment]

    def setblocking(self, flag: bool) -> None:
        """Set blocking mode; a blocking socket goes back to being watched."""
        super().setblocking(flag)
        if flag:
            self.__class__ = socket.socket  # type: ignore[assignment]


# Its repr, pickling errors and type names read as the socket it is.
_NonBlockingSocket.__module__ = socket.socket.__module__
_NonBlockingSocket.__name__ = _NonBlockingSocket.__qualname__ = socket.socket.__qualname__
_SOCKET = socket.socket


def _unwatch(sock: Any) -> None:
    """Move an exact ``socket.socket`` to ``_NonBlockingSocket`` (see there)."""
    if type(sock) is _SOCKET:
        sock.__class__ = _NonBlockingSocket


def _wrap_socket(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """Socket and SSL socket methods: ``_socket`` inline (the socket has a timeout).

    ``socket.socket``'s methods that take no keyword arguments get a wrapper without
    ``**kwargs`` (one dict less per call); a keyword still raises ``TypeError``. A
    non-blocking ``socket.socket`` is moved out of the wrapper's way (see
    ``_NonBlockingSocket``), so only its first call pays for the wrapper.
    """
    if operation in _POSITIONAL_SOCKET_OPERATIONS:

        def positional(*args: Any) -> Any:
            recorder = _recorder
            if recorder is None:
                return original(*args)
            try:
                timeout = args[0].gettimeout()
            except Exception:  # no or a bad socket: the original raises its own error
                return original(*args)
            if timeout == 0.0:
                _unwatch(args[0])
                return original(*args)
            if _get_running_loop() is None:
                return original(*args)
            return _blocking_call(recorder, operation, original, args, {})

        return positional

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        recorder = _recorder
        if recorder is None:
            return original(*args, **kwargs) if kwargs else original(*args)
        try:
            timeout = args[0].gettimeout()
        except Exception:  # no or a bad socket: the original raises its own error
            return original(*args, **kwargs) if kwargs else original(*args)
        if timeout == 0.0:
            _unwatch(args[0])
            return original(*args, **kwargs) if kwargs else original(*args)
        if _get_running_loop() is None:
            return original(*args, **kwargs) if kwargs else original(*args)
        return _blocking_call(recorder, operation, original, args, kwargs)

    return wrapper


#: ``socket.socket`` methods that take no keyword arguments (C methods parsed as
#: positional only, and the Python ``accept(self)``).
_POSITIONAL_SOCKET_OPERATIONS = frozenset(
    f"socket.{m}"
    for m in (
        *("accept", "connect", "recv", "recvfrom", "recvmsg"),
        *("send", "sendall", "sendto", "sendmsg"),
    )
)


def _wrap_select(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``select.select`` (positional arguments only): ``_select`` inline."""

    def wrapper(*args: Any) -> Any:
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(*args)
        n = len(args)
        if n == 4:
            timeout = args[3]
        elif n == 3:
            timeout = None
        else:  # a bad call: the original raises its own error
            return original(*args)
        try:
            waits = (timeout is None or timeout > 0) and not _called_by_loop_selector()
        except Exception:
            waits = False
        if not waits:
            return original(*args)
        return _blocking_call(recorder, operation, original, args, {})

    return wrapper


def _wrap_poll(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``poll`` of a ``select.poll``/``select.epoll`` object: ``_poller`` inline."""

    def poll(*args: Any, **kwargs: Any) -> Any:
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(*args, **kwargs) if kwargs else original(*args)
        timeout = args[0] if args else None
        if kwargs:
            timeout = kwargs.get("timeout", timeout)
        try:
            # A negative timeout waits forever; zero is the only non-blocking poll.
            waits = (timeout is None or timeout != 0) and not _called_by_loop_selector()
        except Exception:
            waits = False
        if not waits:
            return original(*args, **kwargs) if kwargs else original(*args)
        return _blocking_call(recorder, operation, original, args, kwargs)

    return _finish(poll, original)


def _wrap_queue_get(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``queue.Queue.get``: the original's own signature, ``_queue_get`` inline."""

    def get(q: Any, block: Any = True, timeout: Any = None) -> Any:
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(q, block, timeout)
        try:
            waits = block and (timeout is None or timeout > 0) and not q._qsize()
        except Exception:
            waits = False
        if not waits:
            return original(q, block, timeout)
        return _blocking_call(recorder, operation, original, (q, block, timeout), {})

    return get


def _wrap_queue_put(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``queue.Queue.put``: the original's own signature, ``_queue_put`` inline."""

    def put(q: Any, item: Any, block: Any = True, timeout: Any = None) -> Any:
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(q, item, block, timeout)
        try:
            waits = block and (timeout is None or timeout > 0) and 0 < q.maxsize <= q._qsize()
        except Exception:
            waits = False
        if not waits:
            return original(q, item, block, timeout)
        return _blocking_call(recorder, operation, original, (q, item, block, timeout), {})

    return put


def _wrap_fd(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``os.read``/``os.write``: named positional parameters, no ``*args`` packing.

    Their pass-through asks the kernel whether the fd blocks, which leaves no room for
    the generic wrapper's packing and unpacking (bench/passthrough.py).
    """

    def wrapper(fd: Any = _MISSING, arg: Any = _MISSING, /) -> Any:
        if arg is _MISSING:  # a bad call: the original raises its own error
            return original() if fd is _MISSING else original(fd)
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(fd, arg)
        try:
            waits = fd not in _STD_STREAMS and _get_blocking(fd)
        except Exception:
            waits = False  # a bad fd: let the original raise its own error
        if not waits:
            return original(fd, arg)
        return _blocking_call(recorder, operation, original, (fd, arg), {})

    return wrapper


def _wrap_positional(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """A primitive that always may wait and takes no keywords (``sqlite3`` methods).

    No ``**kwargs``: a function that takes them makes a dict on every call, which is
    most of a pass-through's cost here (bench/passthrough.py).
    """

    def call(*args: Any) -> Any:
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(*args)
        return _blocking_call(recorder, operation, original, args, {})

    return call


def _wrap_timeout(
    operation: str, original: Callable[..., Any], may_wait: Callable[..., bool]
) -> Callable[..., Any]:
    """``obj.method(timeout=None)``: ``Event.wait``, ``Condition.wait``, ``Thread.join``,
    ``Future.result``/``exception``. Named parameters: no tuple or dict per call."""

    def call(obj: Any, timeout: Any = None) -> Any:
        try:
            recorder = _recorder
            if recorder is None or _get_running_loop() is None:
                return original(obj, timeout)
            try:
                waits = may_wait(obj, timeout)
            except Exception:
                waits = False
            if not waits:
                return original(obj, timeout)
            return _blocking_call(recorder, operation, original, (obj, timeout), {})
        except BaseException:
            obj = None  # no cycle through the traceback (see ``_wrap``)
            raise

    return call


def _wrap_semaphore_acquire(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``Semaphore.acquire(blocking=True, timeout=None)``: ``_semaphore_acquire`` inline.

    Named parameters, and the check before the loop lookup: a call that cannot wait
    (a free slot, or ``timeout=0`` as ``ThreadPoolExecutor`` asks on every submit)
    passes through without a call.
    """

    def acquire(sem: Any, blocking: Any = True, timeout: Any = None) -> Any:
        try:
            waits = blocking and (timeout is None or timeout > 0) and sem._value <= 0
        except Exception:
            waits = False  # bad arguments: the original raises its own error
        if not waits:
            return original(sem, blocking, timeout)
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(sem, blocking, timeout)
        return _blocking_call(recorder, operation, original, (sem, blocking, timeout), {})

    return acquire


def _wrap_future_result(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``Future.result``/``exception``: ``_future_result`` inline, before the loop lookup.

    asyncio copies every finished executor future's outcome with ``result()`` on the
    loop thread (about 15 times a request under Django): a done future passes through
    with no call but the original's.
    """

    def call(future: Any, timeout: Any = None) -> Any:
        try:
            try:
                waits = future._state in _PENDING_STATES and (timeout is None or timeout > 0)
            except Exception:
                waits = False  # bad arguments: the original raises its own error
            if not waits:
                return original(future, timeout)
            recorder = _recorder
            if recorder is None or _get_running_loop() is None:
                return original(future, timeout)
            return _blocking_call(recorder, operation, original, (future, timeout), {})
        except BaseException:
            future = None  # no cycle through the traceback (see ``_wrap``)
            raise

    return call


def _lock_wait(
    recorder: Recorder, operation: str, acquire: Callable[..., Any], lock: Any, timeout: Any
) -> Any:
    """Wait for a lock another thread holds; past ``LOCK_WAIT_FLOOR`` it is an incident.

    ``timeout`` is ``-1`` (no limit) or positive. The incident's duration counts from
    the first attempt. The C method is called with positional booleans throughout:
    keywords would cost it an argument parse on every pass-through.
    """
    tid = _get_ident()
    busy = recorder.busy
    if tid in busy or (timeout != -1 and timeout <= LOCK_WAIT_FLOOR):
        return acquire(lock, True, timeout)  # noqa: FBT003
    start = _perf_ns()
    if acquire(lock, True, LOCK_WAIT_FLOOR):  # noqa: FBT003
        return True
    busy.add(tid)
    try:
        raw = _begin(recorder, operation, sys._getframe(2))
        try:
            if timeout == -1:
                return acquire(lock, True, -1)  # noqa: FBT003
            remaining = timeout - (_perf_ns() - start) / 1e9
            if remaining > 0:
                return acquire(lock, True, remaining)  # noqa: FBT003
            return acquire(lock, False)  # noqa: FBT003
        finally:
            if raw is not None:
                raw.duration = (_perf_ns() - start) / 1e9
                recorder.submit(raw)
    finally:
        busy.discard(tid)


def _wrap_lock_acquire(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``acquire`` of ``_thread.lock``/``_thread.RLock``: a free lock is taken at once.

    The first attempt never waits, so only a lock another thread holds, on a loop
    thread, takes the slow path. Arguments the original refuses (a timeout with
    ``blocking=False``, a negative timeout) go straight to it for its own error.
    """

    def acquire(lock: Any, blocking: Any = True, timeout: Any = -1) -> Any:
        try:
            waits = blocking and (timeout == -1 or timeout > 0)
        except Exception:
            waits = False
        if not waits:
            return original(lock, blocking, timeout)
        if original(lock, False):  # noqa: FBT003
            return True
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(lock, blocking, timeout)
        return _lock_wait(recorder, operation, original, lock, timeout)

    return acquire


def _wrap_lock_enter(operation: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``__enter__`` of ``_thread.lock``/``_thread.RLock`` (``with lock:``)."""
    owner: Any = getattr(original, "__objclass__", None)
    acquire: Any = vars(owner).get("acquire") if isinstance(owner, type) else None
    acquire = getattr(acquire, "__loophound_original__", acquire)
    if acquire is None:  # pragma: no cover - every lock type has acquire
        raise TypeError(f"loophound: no acquire next to {original!r}")

    def __enter__(lock: Any) -> Any:  # noqa: N807 - it replaces the type's __enter__
        if acquire(lock, False):  # noqa: FBT003
            return True
        recorder = _recorder
        if recorder is None or _get_running_loop() is None:
            return original(lock)
        return _lock_wait(recorder, operation, acquire, lock, -1)

    return __enter__


_DEDICATED: dict[Callable[..., bool], Callable[[str, Callable[..., Any]], Callable[..., Any]]] = {
    _sleep: _wrap_sleep,
    _socket: _wrap_socket,
    _select: _wrap_select,
    _queue_get: _wrap_queue_get,
    _queue_put: _wrap_queue_put,
    _fd_blocks: _wrap_fd,
    _lock_acquire: _wrap_lock_acquire,
    _lock_enter: _wrap_lock_enter,
    always_positional: _wrap_positional,
    _semaphore_acquire: _wrap_semaphore_acquire,
    _future_result: _wrap_future_result,
}


#: Wrappers with the primitive's own parameters that still ask the table predicate
#: (on a loop thread only): off the loop, a pass-through is one frame, no packing.
#: Python methods only: a bad call's TypeError then reads as the original's
#: (``update_wrapper`` gives the qualified name); C methods word theirs differently.
_BY_SIGNATURE: dict[
    Callable[..., bool],
    Callable[[str, Callable[..., Any], Callable[..., bool]], Callable[..., Any]],
] = {
    _event_wait: _wrap_timeout,
    _condition_wait: _wrap_timeout,
    _thread_join: _wrap_timeout,
}


def _finish(wrapper: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    try:
        functools.update_wrapper(wrapper, original)
    except (AttributeError, TypeError):  # pragma: no cover - C callables lacking attributes
        pass
    wrapper.__loophound_original__ = original  # type: ignore[attr-defined]
    return wrapper


class _WatchedPoller:
    """Stands in for a ``select.poll``/``select.epoll`` object; ``poll`` is watched."""

    __slots__ = ("__weakref__", "_poller", "poll")

    def __init__(self, poller: Any, operation: str) -> None:
        self._poller = poller
        self.poll = _wrap_poll(operation, poller.poll)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poller, name)

    def __enter__(self) -> Self:
        self._poller.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._poller.__exit__(*exc)


def _poller_factory(operation: str, factory: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Any:
        poller = factory(*args, **kwargs)
        if _recorder is None:
            return poller
        return _WatchedPoller(poller, operation)

    return make


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


class PatchDetector:
    """Applies and restores the patch table."""

    name = "patches"

    def __init__(self, recorder: Recorder, table: tuple[PatchSpec, ...] = PATCHES) -> None:
        self._recorder = recorder
        self._table = table
        #: (owner, attribute, value in owner's own __dict__ or _MISSING, wrapper, builtin)
        self._applied: list[tuple[Any, str, object, object, bool]] = []
        #: (module globals, name, original, wrapper) of rebound ``from x import y`` names
        self._aliases: list[tuple[dict[str, Any], str, object, object]] = []

    def install(self) -> None:
        """Apply every patch, or none: a failure rolls back and re-raises."""
        global _recorder, _failed
        functions: dict[str, tuple[object, object]] = {}
        try:
            for spec in self._table:
                if spec.builtin:
                    self._set_builtin(spec)
                    continue
                owner = _resolve(spec.owner)
                original = getattr(owner, spec.attribute)
                if owner is _SOCKET:
                    # Non-blocking sockets moved out of the wrappers' way use these.
                    setattr(_NonBlockingSocket, spec.attribute, original)
                wrapper = _wrap(spec.operation, original, spec.may_wait)
                self._set(owner, spec.attribute, wrapper)
                if isinstance(owner, ModuleType) and owner is not builtins:
                    functions[spec.attribute] = (original, wrapper)
            for module_name, attribute in POLLER_FACTORIES:
                owner = _resolve(module_name)
                factory = getattr(owner, attribute, None)
                if factory is not None:
                    operation = f"{module_name}.{attribute}"
                    self._set(owner, attribute, _poller_factory(operation, factory))
            self._rebind_aliases(functions)
        except Exception:
            self.uninstall()
            raise
        _failed = False
        _recorder = self._recorder

    def _set_builtin(self, spec: PatchSpec) -> None:
        """Replace a C type's method, or skip it where that cannot be done.

        These entries add coverage; an interpreter without them (not CPython, a
        free-threaded build, a Python without ``sqlite3``, a type laid out differently)
        keeps the rest of the detector.
        """
        if not builtin_types.supported():
            return
        try:
            owner = _resolve(spec.owner)
            original = getattr(owner, spec.attribute)
            wrapper = _wrap(spec.operation, original, spec.may_wait)
            self._set(owner, spec.attribute, wrapper, builtin=True)
        except (ImportError, AttributeError, TypeError) as exc:
            logger.debug("loophound: %s is not watched here: %s", spec.operation, exc)

    def _rebind_aliases(self, functions: dict[str, tuple[object, object]]) -> None:
        """Point names bound before install (``from time import sleep``) at the wrappers.

        Only the usual spellings are looked up (``sleep``, ``_sleep``) in each loaded
        module: reading every global of every module would cost the first request
        tens of milliseconds. A name holding the original is rebound; uninstall puts
        the original back where the wrapper is still in place.
        """
        if not functions:
            return
        lookups = [
            (alias, original, wrapper)
            for name, (original, wrapper) in functions.items()
            for alias in (name, "_" + name)
        ]
        for module in list(sys.modules.values()):
            name = getattr(module, "__name__", None)
            if not isinstance(name, str) or name == "loophound" or name.startswith("loophound."):
                continue
            try:
                namespace = vars(module)
            except TypeError:
                continue
            for alias, original, wrapper in lookups:
                if namespace.get(alias) is original:
                    namespace[alias] = wrapper
                    self._aliases.append((namespace, alias, original, wrapper))

    def _set(self, owner: Any, attribute: str, value: object, *, builtin: bool = False) -> None:
        own = (
            vars(owner).get(attribute, _MISSING)
            if isinstance(owner, type)
            else getattr(owner, attribute, _MISSING)
        )
        if builtin:
            builtin_types.set_own(owner, attribute, value)
        else:
            setattr(owner, attribute, value)
        self._applied.append((owner, attribute, own, value, builtin))

    def uninstall(self) -> None:
        """Restore every original, newest first."""
        global _recorder
        if _recorder is self._recorder:
            _recorder = None
        while self._aliases:
            namespace, alias, original, wrapper = self._aliases.pop()
            if namespace.get(alias) is wrapper:
                namespace[alias] = original
        while self._applied:
            owner, attribute, own, wrapper, builtin = self._applied.pop()
            if builtin:
                # Another tool may have replaced the method since: leave its own.
                if vars(owner).get(attribute) is wrapper:
                    builtin_types.set_own(owner, attribute, own)
            elif own is _MISSING:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, own)
