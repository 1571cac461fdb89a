"""The built-in sinks: jsonl, warnings, logging, callback, memory; event text and fingerprint."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import loophound
from helpers import line_of, loud, run_captured
from loophound import BlockingCallWarning, Event

if TYPE_CHECKING:
    import pytest

JSONL_FIELDS = {
    "schema",
    "kind",
    "operation",
    "detail",
    "started_at",
    "duration",
    "culprit",
    "frames",
    "fingerprint",
    "thread",
    "task",
    "detectors",
    "request",
    "quiet",
    "suppressed",
    "pid",
    "primitives",
    "samples",
    "loop_cpu",
    "victims",
}


def nap() -> None:
    """Block the calling thread briefly, always from the same line."""
    time.sleep(0.001)  # nap-line


async def nap_twice() -> None:
    """Block the loop twice from one call site."""
    for _ in range(2):
        nap()


def read_lines(path: Path) -> list[str]:
    """Return the lines of a text file."""
    return path.read_text(encoding="utf-8").splitlines()


def test_jsonl_writes_one_schema_1_object_per_line(tmp_path: Path) -> None:
    """Each event becomes one JSON line with schema 1 and exactly the documented fields."""
    path = tmp_path / "events.jsonl"

    async def main() -> None:
        time.sleep(0.001)  # jsonl-first
        time.sleep(0.001)  # jsonl-second

    with loophound.guard(jsonl=str(path), sinks=(), imports="ignore"):
        asyncio.run(main())

    lines = read_lines(path)
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    expected_lines = [line_of("# jsonl-first", __file__), line_of("# jsonl-second", __file__)]
    for record, lineno in zip(records, expected_lines, strict=True):
        assert set(record) == JSONL_FIELDS
        assert record["schema"] == 1
        assert record["kind"] == "call"
        assert record["operation"] == "time.sleep"
        assert record["culprit"] == {
            "file": __file__,
            "line": lineno,
            "function": "test_jsonl_writes_one_schema_1_object_per_line.<locals>.main",
        }
        assert record["frames"][-1] == record["culprit"]
        assert all(set(frame) == {"file", "line", "function"} for frame in record["frames"])
        assert re.fullmatch(r"[0-9a-f]{16}", record["fingerprint"])
        assert record["thread"] == {"id": threading.get_ident(), "name": "MainThread"}
        assert isinstance(record["task"], str)
        assert record["detectors"] == ["patches"]
        assert record["request"] is None
        assert record["quiet"] is False
        assert record["suppressed"] == 0
        assert record["pid"] == os.getpid()
        assert isinstance(record["started_at"], int)
        assert isinstance(record["duration"], float)
        assert record["duration"] > 0
    assert records[0]["fingerprint"] != records[1]["fingerprint"]


def test_jsonl_appends_and_never_truncates(tmp_path: Path) -> None:
    """An existing file keeps its lines, and two guards in sequence append to it in turn."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"pre": "existing"}\n', encoding="utf-8")

    async def main() -> None:
        nap()

    with loophound.guard(jsonl=str(path), sinks=(), imports="ignore"):
        asyncio.run(main())
    assert len(read_lines(path)) == 2
    with loophound.guard(jsonl=str(path), sinks=(), imports="ignore"):
        asyncio.run(main())

    lines = read_lines(path)
    assert lines[0] == '{"pre": "existing"}'
    assert len(lines) == 3
    second, third = json.loads(lines[1]), json.loads(lines[2])
    assert second["operation"] == third["operation"] == "time.sleep"
    assert second["fingerprint"] == third["fingerprint"]


def test_warnings_sink_warns_at_the_culprit_once_per_fingerprint() -> None:
    """Two sleeps from one line give one BlockingCallWarning pointing at that file and line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with loophound.guard(sinks=("warnings",), imports="ignore") as guard:
            asyncio.run(nap_twice())
            assert guard.flush(10)
    ours = [w for w in caught if issubclass(w.category, BlockingCallWarning)]
    assert len(ours) == 1
    assert ours[0].filename == __file__
    assert ours[0].lineno == line_of("# nap-line", __file__)
    assert "time.sleep" in str(ours[0].message)


def test_warnings_sink_warns_again_in_a_new_catch_warnings_block() -> None:
    """A fingerprint that warned already warns again once warnings.filters were replaced."""
    counts = []
    with loophound.guard(sinks=("warnings",), imports="ignore") as guard:
        for _ in range(3):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                asyncio.run(nap_twice())
                assert guard.flush(10)
            counts.append(sum(issubclass(w.category, BlockingCallWarning) for w in caught))
    assert counts == [1, 1, 1]


def test_logging_sink_logs_the_stack_on_the_loophound_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The logging sink logs a WARNING on 'loophound' whose text has traceback-style lines."""
    caplog.set_level(logging.DEBUG, logger="loophound")
    with loophound.guard(sinks=("logging",), imports="ignore"):
        asyncio.run(nap_twice())
    ours = [r for r in caplog.records if r.name == "loophound"]
    assert [r.levelno for r in ours] == [logging.WARNING, logging.DEBUG]
    text = ours[0].getMessage()
    assert f'File "{__file__}", line {line_of("# nap-line", __file__)}, in nap' in text
    assert "time.sleep" in text
    event = ours[0].__dict__["loophound_event"]
    assert isinstance(event, Event)
    assert event.operation == "time.sleep"


def test_on_event_runs_off_the_loop_thread() -> None:
    """The on_event callback is called on loophound's dispatcher thread, not the loop's."""
    seen: list[tuple[int, Event]] = []
    loop_threads: list[int] = []

    def on_event(event: Event) -> None:
        seen.append((threading.get_ident(), event))

    async def main() -> None:
        loop_threads.append(threading.get_ident())
        nap()

    def runner() -> None:
        asyncio.run(main())

    with loophound.guard(sinks=(), on_event=on_event, imports="ignore"):
        worker = threading.Thread(target=runner, name="loop-worker")
        worker.start()
        worker.join(10)
        assert not worker.is_alive()
    [(callback_thread, event)] = [(t, e) for t, e in seen if not e.quiet]
    assert event.thread_id == loop_threads[0]
    assert event.thread_name == "loop-worker"
    assert callback_thread != loop_threads[0]
    assert callback_thread != threading.get_ident()


def test_capture_has_every_event_right_after_the_block() -> None:
    """capture() waits at exit until every detected event arrived, so the list is complete."""

    async def main() -> None:
        for _ in range(5):
            nap()
        time.sleep(0.001)  # capture-other

    with loophound.capture(sinks=()) as events:
        asyncio.run(main())
    found = loud(events)  # no flush, no wait: complete already
    assert len(found) == 6
    assert events.guard is not None
    assert not events.guard.installed


def test_event_format_is_traceback_style() -> None:
    """Event.format() has the headline, the context and File/line lines with the source."""

    async def main() -> None:
        time.sleep(0.001)  # format-line

    [event] = loud(run_captured(main))
    text = event.format()
    lineno = line_of("# format-line", __file__)
    lines = text.splitlines()
    function = "test_event_format_is_traceback_style.<locals>.main"
    assert lines[0].startswith("loophound: time.sleep blocked the event loop for ")
    assert lines[0].endswith(f" ms at {__file__}:{lineno} in {function}")
    assert "thread MainThread" in lines[1]
    assert "seen by patches" in lines[1]
    assert "Traceback (most recent call last):" in lines
    culprit_line = f'  File "{__file__}", line {lineno}, in {function}'
    assert culprit_line in lines
    assert lines[lines.index(culprit_line) + 1] == "    time.sleep(0.001)  # format-line"
    assert lines[-2] == culprit_line


SCRIPT = """
import asyncio, time, loophound

async def main():
    time.sleep(0.001)

with loophound.capture(sinks=()) as events:
    asyncio.run(main())
[event] = [e for e in events if not e.quiet]
print(event.fingerprint, hash(event.operation))
"""


def test_fingerprint_is_stable_across_processes_and_not_hash(tmp_path: Path) -> None:
    """Two processes with different hash seeds agree on the fingerprint of one call site."""
    script = tmp_path / "fingerprint_probe.py"
    script.write_text(SCRIPT, encoding="utf-8")
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env = {k: v for k, v in env.items() if not k.startswith("LOOPHOUND_")}
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=True,
        )
        outputs.append(result.stdout.split())
    (first, first_hash), (second, second_hash) = outputs
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert first == second
    assert first_hash != second_hash  # hash() differs between the two processes


class ClosingSink:
    """Records whether it was closed while another sink's delivery was still running."""

    name = "closing"

    def __init__(self, delivering: threading.Event) -> None:
        self.delivering = delivering
        self.closed_during_delivery: bool | None = None

    def deliver(self, event: Event) -> None:
        """Take an event."""

    def close(self) -> None:
        """Note whether the hanging delivery was still running."""
        self.closed_during_delivery = self.delivering.is_set()


def test_sinks_are_closed_only_after_a_hanging_delivery_returns() -> None:
    """Uninstall during a hanging callback leaves the sinks open until the callback returns."""
    entered, release, delivering = threading.Event(), threading.Event(), threading.Event()

    def hang(event: Event) -> None:
        delivering.set()
        entered.set()
        release.wait(5)
        delivering.clear()

    guard = loophound.install(sinks=(), on_event=hang, flush_timeout=0.1)
    closing = ClosingSink(delivering)
    guard.add_sink(closing)

    async def main() -> None:
        time.sleep(0.001)

    asyncio.run(main())
    try:
        assert entered.wait(5)
        guard.uninstall()
        assert closing.closed_during_delivery is None  # not closed under the delivery
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while closing.closed_during_delivery is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closing.closed_during_delivery is False
