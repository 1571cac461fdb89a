"""The guard never hurts the host: uninstall at awkward moments, failing exporters."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loophound
from helpers import loud


@pytest.fixture
def libmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A module treated as a third-party library (exclude_modules), importable as libmod."""
    (tmp_path / "libmod.py").write_text(
        textwrap.dedent(
            """
            import asyncio, time

            async def poll(rounds):
                for _ in range(rounds):
                    time.sleep(0.03)
                    await asyncio.sleep(0.01)

            def fetch():
                time.sleep(0.01)
                time.sleep(0.02)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import libmod  # type: ignore[import-not-found]

    yield libmod
    sys.modules.pop("libmod", None)


def test_uninstall_inside_a_running_step_does_not_break_the_loop() -> None:
    """Uninstalling from a coroutine in the middle of a loop step raises nothing into the loop."""

    async def main() -> str:
        guard = loophound.install(sinks=())
        await asyncio.sleep(0)
        guard.uninstall()
        await asyncio.sleep(0.01)
        return "done"

    assert asyncio.run(main()) == "done"


def test_uninstall_on_a_running_loop_reports_none_of_loophounds_own_waits() -> None:
    """Uninstalling on a loop thread (joining the watchdog's thread) is no incident."""
    events: list[loophound.Event] = []

    async def main() -> None:
        guard = loophound.install(sinks=(), on_event=events.append)
        await asyncio.sleep(0.05)  # the watchdog's thread runs and ticks
        guard.uninstall()

    asyncio.run(main())
    assert events == []


def test_uninstall_from_an_event_callback_leaves_the_process_clean() -> None:
    """A callback that uninstalls the guard does uninstall it; a new guard can be installed."""
    holder: dict[str, loophound.Guard] = {}

    def on_event(_event: loophound.Event) -> None:
        holder["guard"].uninstall()

    holder["guard"] = loophound.install(sinks=(), on_event=on_event)

    async def main() -> None:
        time.sleep(0.01)

    asyncio.run(main())
    deadline = time.monotonic() + 5
    while holder["guard"].installed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not holder["guard"].installed
    assert loophound.active_guard() is None
    loophound.install(sinks=()).uninstall()


def test_no_tick_survives_uninstall() -> None:
    """After uninstall, the watchdog's tick stops rescheduling itself on the loop."""

    async def main() -> list[Any]:
        guard = loophound.install(sinks=())
        await asyncio.sleep(0.1)
        guard.uninstall()
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        return [
            handle
            for handle in loop._scheduled  # type: ignore[attr-defined]
            if "Watchdog" in getattr(handle._callback, "__qualname__", "")
            and not handle.cancelled()
        ]

    assert asyncio.run(main()) == []


@contextlib.contextmanager
def _guarded_without_the_collector(detectors: tuple[str, ...]) -> Iterator[None]:
    """Run the block under a guard with the cyclic garbage collector off."""
    guard = loophound.install(sinks=(), detectors=detectors, threshold=10)
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        guard.uninstall()


@pytest.mark.parametrize("detectors", [(), ("callbacks",)], ids=["no-detector", "callbacks"])
def test_a_cancelled_task_is_freed_without_the_garbage_collector(
    detectors: tuple[str, ...],
) -> None:
    """A task cancelled and never awaited (Django's disconnect listener) is freed by refcount."""

    async def main() -> weakref.ref[asyncio.Task[None]]:
        async def receive() -> None:
            await asyncio.Event().wait()

        task = asyncio.create_task(receive())
        await asyncio.sleep(0)
        task.cancel()  # its CancelledError traceback is kept on the task
        for _ in range(3):
            await asyncio.sleep(0)
        assert task.cancelled()
        ref = weakref.ref(task)
        del task
        return ref

    with _guarded_without_the_collector(detectors):
        ref = asyncio.run(main())
        alive = ref() is not None
    assert not alive


def test_a_failed_future_result_is_freed_without_the_garbage_collector() -> None:
    """A future whose result() raised through the patch wrapper is freed by refcount."""
    with _guarded_without_the_collector(("patches",)):
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_exception(ValueError("failed"))
        with pytest.raises(ValueError, match="failed"):
            future.result()
        ref = weakref.ref(future)
        del future
        alive = ref() is not None
    assert not alive


def test_a_failing_loop_delay_observer_is_dropped_and_ticks_go_on() -> None:
    """An observer of loop delays that raises is removed; ticks continue and no stall appears."""
    calls = 0

    def observer(_seconds: float, _loop_id: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ValueError("exporter hiccup")

    async def busy() -> None:
        # Short cooperative steps: the loop is never idle, so its tick never rests.
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            spin_until = time.perf_counter() + 0.002
            while time.perf_counter() < spin_until:
                pass
            await asyncio.sleep(0)

    with loophound.capture(sinks=()) as events:
        guard = events.guard
        assert guard is not None
        guard.loop_delays.observers = (observer,)
        asyncio.run(busy())
        counted = sum(guard.loop_delays.counts)
    assert calls == 3
    assert guard.loop_delays.observers == ()
    assert counted > 10
    assert loud(list(events)) == []


def test_a_library_coroutine_blocking_every_round_is_reported_every_round(libmod: Any) -> None:
    """Five blocking rounds of one library coroutine are five incidents, not one."""
    with loophound.capture(sinks=(), exclude_modules=["libmod"]) as events:
        asyncio.run(libmod.poll(5))
    sleeps = [e for e in loud(list(events)) if e.operation == "time.sleep"]
    assert len(sleeps) == 5


def test_primitives_of_one_library_call_merge_without_the_watchdog(libmod: Any) -> None:
    """Two sleeps inside one library call are one event listing both, watchdog or not."""

    async def main() -> None:
        libmod.fetch()

    with loophound.capture(
        sinks=(), detectors=("audit", "patches"), exclude_modules=["libmod"]
    ) as events:
        asyncio.run(main())
    found = loud(list(events))
    # One kind of primitive: the event keeps its name (a mix would be named libmod.fetch).
    assert [(e.operation, e.primitives) for e in found] == [
        ("time.sleep", ("time.sleep", "time.sleep"))
    ]


def test_a_stall_in_progress_is_reported_at_uninstall() -> None:
    """Uninstalling while a worker loop is stalled still delivers that stall."""
    started = threading.Event()
    delivered: list[loophound.Event] = []

    async def main() -> None:
        await asyncio.sleep(0.05)
        started.set()
        end = time.perf_counter() + 0.6
        while time.perf_counter() < end:
            pass

    guard = loophound.install(sinks=(), on_event=delivered.append)
    worker = threading.Thread(target=asyncio.run, args=(main(),))
    worker.start()
    assert started.wait(10)
    time.sleep(0.4)
    guard.uninstall()
    worker.join(10)
    assert [e.kind for e in delivered] == ["stall"]
