"""Locks and sqlite3 objects made before install: their C types' methods are watched.

Every lock here is real and held by a real thread; every database is a real file in
``tmp_path``. A lock a test holds is released before the test ends; waits are bounded.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import loophound
from helpers import line_of, loud, one_patched_event, run_captured
from loophound import BlockingCallError, Event, _guard
from loophound.detectors import builtin_types
from loophound.detectors.patch_table import LOCK_WAIT_FLOOR, PATCHES, PatchSpec, always

pytestmark = pytest.mark.skipif(
    not builtin_types.supported(), reason="built-in types cannot be patched here"
)

#: Longer than the lock floor by far, short enough for a unit test.
HOLD = 0.05
BOUND = 5.0
LOCK_TYPES = (threading.Lock, threading.RLock)
ACQUIRE_OPERATION = {
    threading.Lock: "threading.Lock.acquire",
    threading.RLock: "threading.RLock.acquire",
}


@contextmanager
def held(lock: Any, *, until: threading.Event | None = None) -> Iterator[threading.Event]:
    """Hold ``lock`` in another thread: released when ``until`` is set, or at exit.

    Yields an event the test sets when the loop is about to wait; the holder then keeps
    the lock ``HOLD`` seconds more, so the wait is longer than the floor.
    """
    waiting = threading.Event()
    taken = threading.Event()
    release = until or threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            if waiting.wait(BOUND):
                time.sleep(HOLD)
                if until is not None:
                    release.wait(BOUND)

    holder = threading.Thread(target=hold, name="lock-holder")
    holder.start()
    assert taken.wait(BOUND)
    try:
        yield waiting
    finally:
        waiting.set()
        release.set()
        holder.join(BOUND)
    assert not holder.is_alive()


def one_event(events: list[Event], operation: str, marker: str) -> Event:
    """Assert one loud event for ``operation`` at ``marker``'s line, and return it."""
    return one_patched_event(events, operation, marker, __file__)


@pytest.mark.parametrize("factory", LOCK_TYPES)
def test_a_held_lock_made_before_install_is_one_event_at_acquire(factory: Any) -> None:
    """acquire() of a lock made before install, held by another thread, is one event at its line."""
    lock = factory()
    with held(lock) as waiting:

        async def main() -> None:
            waiting.set()
            assert lock.acquire()  # marker-acquire
            lock.release()

        events = run_captured(main)
    event = one_event(events, ACQUIRE_OPERATION[factory], "# marker-acquire")
    assert event.duration is not None
    assert event.duration >= HOLD / 2


@pytest.mark.parametrize("factory", LOCK_TYPES)
def test_with_on_a_held_lock_is_one_event_at_the_with_line(factory: Any) -> None:
    """``with lock:`` on a lock another thread holds is one event at the with statement."""
    lock = factory()
    with held(lock) as waiting:

        async def main() -> None:
            waiting.set()
            with lock:  # marker-with
                pass

        events = run_captured(main)
    one_event(events, ACQUIRE_OPERATION[factory], "# marker-with")


def test_a_timed_out_acquire_past_the_floor_is_an_event_and_returns_false() -> None:
    """acquire(timeout=t) that times out past the floor returns False and is an event."""
    lock = threading.Lock()
    release = threading.Event()
    got: list[bool] = []
    with held(lock, until=release) as waiting:

        async def main() -> None:
            waiting.set()
            got.append(lock.acquire(timeout=HOLD))  # marker-timeout

        events = run_captured(main)
    assert got == [False]
    one_event(events, "threading.Lock.acquire", "# marker-timeout")


def test_waits_within_the_floor_are_no_incident() -> None:
    """A free lock, an RLock taken again by its owner and a timeout under the floor are no event."""
    free = threading.Lock()
    mine = threading.RLock()
    busy = threading.Lock()
    results: list[bool] = []
    with held(busy):

        async def main() -> None:
            results.append(free.acquire())
            free.release()
            with mine, mine:
                results.append(mine.acquire(timeout=1))
                mine.release()
            results.append(busy.acquire(timeout=LOCK_WAIT_FLOOR / 2))
            results.append(busy.acquire(blocking=False))

        events = run_captured(main)
    assert results == [True, True, False, False]
    assert loud(events) == []


def test_a_held_lock_off_the_loop_is_no_incident() -> None:
    """A thread without a running loop waits on a held lock without an event."""
    lock = threading.Lock()
    with loophound.capture(sinks=()) as events, held(lock) as waiting:
        waiting.set()
        assert lock.acquire(timeout=BOUND)
        lock.release()
    assert list(events) == []


def test_the_lock_methods_keep_their_argument_errors() -> None:
    """Arguments the C method refuses raise the same errors through the wrapper."""
    lock = threading.Lock()
    with loophound.capture(sinks=()):
        assert type(lock).__dict__["acquire"].__loophound_original__ is not None
        with pytest.raises(ValueError, match="non-blocking"):
            lock.acquire(False, 1)  # noqa: FBT003 - the C signature
        with pytest.raises(ValueError):
            lock.acquire(True, -5)  # noqa: FBT003 - the C signature
        with pytest.raises(TypeError):
            lock.acquire(True, "soon")  # noqa: FBT003 - the C signature
        assert lock.acquire(blocking=True, timeout=0.5) is True
        lock.release()


def test_raise_mode_refuses_a_held_lock_without_taking_it() -> None:
    """In raise mode a held lock raises BlockingCallError at the call and stays unowned."""
    lock = threading.Lock()
    raised: list[BaseException] = []
    with held(lock) as waiting:

        async def main() -> None:
            waiting.set()
            try:
                lock.acquire()
            except BlockingCallError as exc:
                raised.append(exc)

        run_captured(main, mode="raise")
    assert len(raised) == 1
    assert lock.acquire(blocking=False)  # the holder released it, the loop never took it
    lock.release()


def test_uninstall_puts_the_c_methods_back() -> None:
    """After uninstall the lock and sqlite3 types hold their own C methods again."""
    watched = {
        type(threading.Lock()): ("acquire", "__enter__"),
        type(threading.RLock()): ("acquire", "__enter__"),
        sqlite3.Connection: ("execute", "commit"),
        sqlite3.Cursor: ("execute",),
    }
    originals = {(cls, name): vars(cls)[name] for cls, names in watched.items() for name in names}
    with loophound.capture(sinks=()):
        for (cls, name), original in originals.items():
            assert vars(cls)[name] is not original
    for (cls, name), original in originals.items():
        assert vars(cls)[name] is original


def test_uninstall_leaves_a_later_replacement_in_place() -> None:
    """A method another tool put in after install is not overwritten at uninstall."""
    lock_type = type(threading.Lock())
    original = vars(lock_type)["acquire"]

    def theirs(lock: Any, *args: Any) -> Any:
        return original(lock, *args)

    try:
        with loophound.capture(sinks=()):
            builtin_types.set_own(lock_type, "acquire", theirs)
        assert vars(lock_type)["acquire"] is theirs
    finally:
        builtin_types.set_own(lock_type, "acquire", original)


def test_sqlite_calls_on_a_connection_made_before_install_are_events(tmp_path: Path) -> None:
    """execute, a cursor's execute and commit on an early connection are events at their lines."""
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    try:
        conn.execute("CREATE TABLE t (x INTEGER)")
        cursor = conn.cursor()

        async def main() -> None:
            conn.execute("INSERT INTO t VALUES (1)")  # marker-conn-execute
            cursor.execute("SELECT x FROM t")  # marker-cursor-execute
            conn.commit()  # marker-commit

        events = loud(run_captured(main))
        assert [(e.operation, e.culprit.lineno if e.culprit else 0) for e in events] == [
            ("sqlite3.execute", line_of("# marker-conn-execute", __file__)),
            ("sqlite3.execute", line_of("# marker-cursor-execute", __file__)),
            ("sqlite3.commit", line_of("# marker-commit", __file__)),
        ]
        assert cursor.fetchall() == [(1,)]
    finally:
        conn.close()


def test_set_own_refuses_static_types_and_new_names() -> None:
    """Only existing methods of heap types can be replaced."""
    with pytest.raises(TypeError, match="not a heap type"):
        builtin_types.set_own(int, "bit_length", lambda _self: 0)
    with pytest.raises(TypeError, match="no own attribute"):
        builtin_types.set_own(type(threading.Lock()), "no_such_method", None)


def test_get_on_an_empty_simple_queue_made_before_install_is_an_event() -> None:
    """SimpleQueue.get on an empty queue with a timeout is one event; a non-empty one is none."""
    empty: queue.SimpleQueue[int] = queue.SimpleQueue()
    full: queue.SimpleQueue[int] = queue.SimpleQueue()
    full.put(1)
    got: list[int] = []

    async def main() -> None:
        got.append(full.get(timeout=BOUND))
        with pytest.raises(queue.Empty):
            empty.get(timeout=0.01)  # marker-simple-queue

    events = run_captured(main)
    assert got == [1]
    one_event(events, "queue.SimpleQueue.get", "# marker-simple-queue")


def test_a_c_method_that_cannot_be_replaced_is_skipped_and_the_rest_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A built-in entry that cannot be applied (a static type, a missing module) is skipped."""
    unusable = (
        PatchSpec("builtins.int", "bit_length", "int.bit_length", always, builtin=True),
        PatchSpec("no_such_module.Type", "get", "no_such.get", always, builtin=True),
    )
    monkeypatch.setattr(_guard, "PATCHES", (*unusable, *PATCHES))
    original_sleep = time.sleep
    with loophound.capture(sinks=()):
        assert time.sleep is not original_sleep
        assert getattr(time.sleep, "__loophound_original__", None) is original_sleep
        assert not hasattr(int.bit_length, "__loophound_original__")
    assert time.sleep is original_sleep
