"""Stall detection: watchdog sampling, slow-callback timing and the merge of detectors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import loophound
from helpers import line_of, loud
from loophound import Event

uvloop = pytest.importorskip("uvloop")

LOOPS = ["asyncio", "uvloop"]
THREADS = ["main", "worker"]


def run_on(
    loop_kind: str, where: str, main: Callable[[], Coroutine[Any, Any, Any]], **config: Any
) -> list[Event]:
    """Run ``main()`` on the chosen loop kind, in the main thread or a worker thread."""
    config.setdefault("sinks", ())
    runner: Callable[[Coroutine[Any, Any, Any]], Any]
    runner = asyncio.run if loop_kind == "asyncio" else uvloop.run
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner(main())
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    with loophound.capture(**config) as events:
        if where == "main":
            target()
        else:
            worker = threading.Thread(target=target, name="loop-worker")
            worker.start()
            worker.join(30)
            assert not worker.is_alive()
    if errors:
        raise errors[0]
    return loud(list(events))


def spin(seconds: float) -> None:
    """Burn CPU in pure Python for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # spin-line
        pass


def calibrated(
    make: Callable[[int], object],
    run: Callable[[object], object],
    target: float,
    start: int,
    grow: Callable[[int], int],
) -> object:
    """Return ``make(n)`` for the first ``n`` (grown by ``grow``) whose run takes ``target`` s."""
    n = start
    while True:
        data = make(n)
        began = time.perf_counter()
        run(data)
        if time.perf_counter() - began >= target or n > 1 << 30:
            return data
        n = grow(n)


def only(events: list[Event]) -> Event:
    """Return the single event, failing with the list when there is not exactly one."""
    assert len(events) == 1, [e.format() for e in events]
    return events[0]


@pytest.mark.parametrize("where", THREADS)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_pure_python_cpu_stall_is_one_incident_at_the_loop_line(loop_kind: str, where: str) -> None:
    """A 300 ms pure-Python loop in a coroutine is reported once, culprit the loop's line."""

    async def main() -> None:
        await asyncio.sleep(0.05)
        spin(0.3)

    event = only(run_on(loop_kind, where, main))
    assert event.kind == "stall"
    assert event.operation == "cpu"
    assert "watchdog" in event.detectors
    assert event.culprit is not None
    assert event.culprit.lineno == line_of("# spin-line", __file__)
    assert event.duration is not None
    assert event.duration >= 0.25
    assert event.samples


@pytest.mark.parametrize("where", THREADS)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_gil_holding_json_loads_names_its_line(loop_kind: str, where: str) -> None:
    """A 200 ms json.loads (C code holding the GIL) is reported at the json.loads line."""
    doc = calibrated(
        lambda n: json.dumps([list(range(50))] * n), json.loads, 0.2, 256, lambda n: n * 2
    )
    assert isinstance(doc, str)

    took: list[float] = []

    async def main() -> None:
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        json.loads(doc)  # json-line
        took.append(time.perf_counter() - start)

    event = only(run_on(loop_kind, where, main))
    assert event.culprit is not None
    assert (event.culprit.filename, event.culprit.lineno) == (
        __file__,
        line_of("# json-line", __file__),
    )
    assert event.duration is not None
    # Against the call as it ran here: the calibration is only a target (CPU speed varies).
    assert event.duration >= 0.75 * took[0]


@pytest.mark.parametrize("where", THREADS)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_catastrophic_regex_names_its_line(loop_kind: str, where: str) -> None:
    """A backtracking regex that holds the GIL is reported once at the line that ran it."""
    pattern = re.compile(r"(a+)+$")
    text = calibrated(lambda n: "a" * n + "b", pattern.match, 0.25, 16, lambda n: n + 1)
    assert isinstance(text, str)

    async def main() -> None:
        await asyncio.sleep(0.05)
        pattern.match(text)  # regex-line

    event = only(run_on(loop_kind, where, main))
    assert event.culprit is not None
    assert event.culprit.lineno == line_of("# regex-line", __file__)


@pytest.mark.parametrize("where", THREADS)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_hashlib_over_a_large_buffer_names_its_line(loop_kind: str, where: str) -> None:
    """hashlib over a large buffer (releases the GIL) is reported at the hashing line."""
    data = calibrated(
        lambda n: b"x" * n, lambda d: hashlib.sha256(d).digest(), 0.25, 1 << 20, lambda n: n * 2
    )
    assert isinstance(data, bytes)

    async def main() -> None:
        await asyncio.sleep(0.05)
        hashlib.sha256(data).digest()  # hash-line

    event = only(run_on(loop_kind, where, main))
    assert event.culprit is not None
    assert event.culprit.lineno == line_of("# hash-line", __file__)


@pytest.mark.parametrize("where", THREADS)
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_patched_sleep_is_one_merged_incident(loop_kind: str, where: str) -> None:
    """time.sleep(0.3) is one incident: the call's line and name, every detector that saw it."""

    async def main() -> None:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # sleep-line

    event = only(run_on(loop_kind, where, main))
    assert event.kind == "call"
    assert event.operation == "time.sleep"
    assert event.culprit is not None
    assert event.culprit.lineno == line_of("# sleep-line", __file__)
    assert "patches" in event.detectors
    assert "watchdog" in event.detectors
    if loop_kind == "asyncio":
        assert "callbacks" in event.detectors
    assert event.duration is not None
    assert event.duration >= 0.3


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_short_compute_and_cooperative_tasks_and_idle_loops_report_nothing(loop_kind: str) -> None:
    """50 ms of compute, a 1 s task in 10 ms steps and a 2 s idle wait are never stalls."""

    async def main() -> None:
        spin(0.05)
        for _ in range(100):
            spin(0.01)
            await asyncio.sleep(0)
        await asyncio.sleep(2)

    assert run_on(loop_kind, "main", main) == []


def test_a_150ms_step_is_reported_every_time_and_a_50ms_step_never() -> None:
    """With a 100 ms threshold, each of five 150 ms steps is reported and 50 ms steps are not."""

    async def main() -> None:
        for _ in range(5):
            spin(0.15)
            await asyncio.sleep(0.05)
            spin(0.05)
            await asyncio.sleep(0.05)

    events = run_on("asyncio", "main", main, threshold=0.1)
    assert len(events) == 5
    assert {e.culprit.lineno for e in events if e.culprit} == {line_of("# spin-line", __file__)}


def test_async_to_sync_loops_in_threads_are_watched() -> None:
    """A stall in a loop that asgiref's async_to_sync runs in a thread is reported."""
    from asgiref.sync import async_to_sync

    async def job() -> None:
        spin(0.3)

    with loophound.capture(sinks=()) as events:
        async_to_sync(job)()
    event = only(loud(list(events)))
    assert event.culprit is not None
    assert event.culprit.lineno == line_of("# spin-line", __file__)
    assert event.thread_name != threading.current_thread().name


def test_a_closed_loop_is_forgotten() -> None:
    """After asyncio.run returns, the watchdog no longer watches its loop."""
    with loophound.capture(sinks=()) as events:
        asyncio.run(asyncio.sleep(0.05))
        guard = events.guard
        assert guard is not None
        assert guard.watched_loops() == []


def test_stall_inside_allow_blocking_is_suppressed() -> None:
    """A stall inside an allow_blocking scope is not reported."""

    async def main() -> None:
        await asyncio.sleep(0.05)
        with loophound.allow_blocking("batch job"):
            spin(0.3)

    assert run_on("asyncio", "main", main) == []


def test_stall_carries_its_task_and_folded_samples_in_jsonl(tmp_path: Any) -> None:
    """A stall event names its task and its folded stacks reach the JSON-lines log."""
    log = tmp_path / "events.jsonl"

    async def main() -> None:
        await asyncio.sleep(0.05)
        spin(0.3)

    async def outer() -> None:
        await asyncio.create_task(main(), name="spinner")

    events = run_on("asyncio", "main", outer, jsonl=str(log))
    event = only(events)
    assert event.task == "spinner"
    record = json.loads(log.read_text().splitlines()[0])
    assert record["kind"] == "stall"
    assert record["samples"]
    assert all(";" in stack or "spin" in stack for stack in record["samples"])


def test_an_idle_asyncio_loop_rests_its_tick_and_still_catches_the_next_stall() -> None:
    """An idle asyncio loop stops ticking; the first step after idling is still watched."""
    ticks: list[int] = []

    async def main() -> None:
        guard = loophound.active_guard()
        assert guard is not None
        await asyncio.sleep(0.05)
        before = sum(guard.loop_delays.counts)
        await asyncio.sleep(0.6)
        ticks.append(sum(guard.loop_delays.counts) - before)
        spin(0.3)

    event = only(run_on("asyncio", "main", main))
    assert ticks[0] <= 3  # a ticking loop would have ticked about 20 times
    assert event.culprit is not None
    assert event.culprit.lineno == line_of("# spin-line", __file__)


def test_a_loop_run_in_two_threads_in_turn_merges_each_runs_call_with_its_step() -> None:
    """A loop run in one thread, then in another: each run's time.sleep is one merged incident."""
    loop = asyncio.new_event_loop()

    async def main() -> None:
        await asyncio.sleep(0.05)
        time.sleep(0.15)  # moved-line

    def run_once() -> None:
        loop.run_until_complete(main())

    try:
        with loophound.capture(sinks=(), threshold=0.1) as events:
            for name in ("first-thread", "second-thread"):
                worker = threading.Thread(target=run_once, name=name)
                worker.start()
                worker.join(30)
                assert not worker.is_alive()
    finally:
        loop.close()
    found = loud(list(events))
    assert [e.thread_name for e in found] == ["first-thread", "second-thread"]
    for event in found:
        assert event.operation == "time.sleep"
        assert event.culprit is not None
        assert event.culprit.lineno == line_of("# moved-line", __file__)
        assert "callbacks" in event.detectors


class _LoopWithoutAttributes(asyncio.SelectorEventLoop):
    """An asyncio loop that refuses new attributes, as a loop with ``__slots__`` would."""

    def __setattr__(self, name: str, value: object) -> None:
        if name.startswith("_loophound"):
            raise AttributeError(name)
        super().__setattr__(name, value)


def test_a_loop_that_refuses_attributes_still_runs_and_reports_its_stalls() -> None:
    """A loop that refuses loophound's step attribute runs as usual; its CPU stall is reported."""

    async def main() -> int:
        await asyncio.sleep(0.05)
        spin(0.3)
        return 7

    loop = _LoopWithoutAttributes()
    try:
        with loophound.capture(sinks=(), threshold=0.1) as events:
            assert loop.run_until_complete(main()) == 7
    finally:
        loop.close()
    assert not hasattr(loop, "_loophound_step")  # the record was refused
    event = only(loud(list(events)))
    assert event.culprit is not None
    assert event.culprit.lineno == line_of("# spin-line", __file__)
    assert "callbacks" in event.detectors


def test_a_guard_installed_inside_another_guards_step_keeps_no_stale_mark() -> None:
    """A guard installed in a step the old guard's wrapper times marks no step it cannot clear."""
    marks: list[set[int]] = []

    async def main() -> None:
        await asyncio.sleep(0)
        old = loophound.active_guard()
        assert old is not None
        old.uninstall()
        new = loophound.install(sinks=(), threshold=0.1)
        try:
            time.sleep(0.01)  # a blocking call in the step the old guard's wrapper runs
            await asyncio.sleep(0.05)
            tracker = new._recorder.tracker if new._recorder is not None else None
            assert tracker is not None
            marks.append(set(tracker.marked))
        finally:
            new.uninstall()

    first = loophound.install(sinks=(), threshold=0.1)
    try:
        asyncio.run(main())
    finally:
        if first.installed:
            first.uninstall()
    assert marks == [set()]
