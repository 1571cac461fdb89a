"""Run one detection scenario under one tool, in this fresh process; write JSON.

    python bench/detection/_child.py TOOL SCENARIO.py OUT.json

Order: import the scenario (its module-level names are bound before any tool is
installed, as in an application that imported them at start-up), ``prepare(h)``,
install the tool, run the scenario, uninstall or flush the tool, write what it
reported. ``run.py`` starts one of these per scenario and tool.

What counts as "flagged", per tool, and which locations it reported:

- loophound: every event given to ``on_event`` that is not ``quiet`` (first-time
  module loads are quiet by default and never shown by the warnings and logging
  sinks); location: ``event.culprit``.
- blockbuster: every ``BlockingError`` it raised (recorded as it is made, even when
  the scenario's code swallows it); location: the innermost frame of the scenario's
  file in the stack it was raised from.
- pyleak: every block its detector recorded; location: the innermost frame of the
  scenario's file in the stack it sampled.
- aiodebug, asyncio-debug: every slow-callback report; locations: every
  ``file:line`` of the scenario's file in the handle's text (a task's current line,
  a callback's definition, where it was created).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from _harness import Harness

TOOLS = ("loophound", "blockbuster", "pyleak", "aiodebug", "asyncio-debug")
THRESHOLD = 0.1
_LOCATION = re.compile(r"([^\s<>'\"(),=]+\.py):(\d+)")


class Flags:
    """What the tool reported, from any thread."""

    def __init__(self, scenario_file: str) -> None:
        self.file = scenario_file
        self.items: list[dict[str, Any]] = []
        self.quiet = 0
        self._lock = threading.Lock()

    def add(self, where: list[tuple[str, int]], text: str, **extra: Any) -> None:
        item = {"where": where, "text": text[:300], "at_ns": time.perf_counter_ns(), **extra}
        with self._lock:
            self.items.append(item)

    def innermost_own(self, stack: list[traceback.FrameSummary]) -> list[tuple[str, int]]:
        """The innermost frame of the scenario's file in a stack (outermost first).

        With none, the innermost frame of the stack (a location elsewhere).
        """
        for frame in reversed(stack):
            if frame.filename == self.file and frame.lineno is not None:
                return [(frame.filename, frame.lineno)]
        for frame in reversed(stack):
            if frame.lineno is not None:
                return [(frame.filename, frame.lineno)]
        return []

    @staticmethod
    def in_text(text: str) -> list[tuple[str, int]]:
        """Every ``file.py:line`` in a text (a handle's repr)."""
        return [(f, int(n)) for f, n in _LOCATION.findall(text)]


def load_scenario(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("scenario", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scenario"] = module
    spec.loader.exec_module(module)
    return module


# -- the tools -------------------------------------------------------------------------


def use_loophound(h: Harness, flags: Flags) -> Callable[[], None]:
    import loophound

    def on_event(event: loophound.Event) -> None:
        if event.quiet:
            flags.quiet += 1
            return
        where = []
        if event.culprit is not None:
            where = [(event.culprit.filename, event.culprit.lineno)]
        duration = "" if event.duration is None else f" {event.duration * 1000:.1f} ms"
        flags.add(
            where,
            f"{event.kind} {event.operation}{duration} [{','.join(event.detectors)}]",
        )

    guard = loophound.install(threshold=THRESHOLD, sinks=(), on_event=on_event)
    del h

    def stop() -> None:
        guard.flush()
        guard.uninstall()

    return stop


def use_blockbuster(h: Harness, flags: Flags) -> Callable[[], None]:
    from blockbuster import blockbuster as bb

    original = bb.BlockingError.__init__

    def init(self: Exception, func: str) -> None:
        flags.add(flags.innermost_own(traceback.extract_stack()[:-1]), f"BlockingError {func}")
        original(self, func)

    bb.BlockingError.__init__ = init  # type: ignore[method-assign]
    buster = bb.BlockBuster()
    buster.activate()
    del h
    return buster.deactivate


def use_pyleak(h: Harness, flags: Flags) -> Callable[[], None]:
    from pyleak import no_event_loop_blocking
    from pyleak.utils import CallerContext

    quiet = logging.getLogger("bench.pyleak")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False

    async def enter(coro: Coroutine[Any, Any, Any]) -> None:
        context = no_event_loop_blocking(
            action="log",
            logger=quiet,
            threshold=THRESHOLD,
            check_interval=0.01,
            caller_context=CallerContext(filename=h.file, name="main", files={h.file}),
        )
        try:
            async with context:
                await coro
        finally:
            for block in context.detector.detected_blocks:
                flags.add(
                    flags.innermost_own(block.blocking_stack or []),
                    f"block {block.duration * 1000:.0f} ms",
                )

    h.enter = enter
    return lambda: None


def use_aiodebug(h: Harness, flags: Flags) -> Callable[[], None]:
    from aiodebug import log_slow_callbacks

    def on_slow(name: str, duration: float) -> None:
        flags.add(flags.in_text(name), f"slow {duration * 1000:.0f} ms: {name}")

    log_slow_callbacks.enable(THRESHOLD, on_slow_callback=on_slow)
    del h
    return lambda: None


class _SlowCallbackHandler(logging.Handler):
    def __init__(self, flags: Flags) -> None:
        super().__init__(logging.WARNING)
        self.flags = flags

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing "):
            self.flags.add(self.flags.in_text(message), message)


def use_asyncio_debug(h: Harness, flags: Flags) -> Callable[[], None]:
    # PYTHONASYNCIODEBUG=1 is set by run.py: every loop (asyncio and uvloop, any
    # thread) starts in debug mode, with slow_callback_duration 0.1 s (the default).
    assert os.environ.get("PYTHONASYNCIODEBUG") == "1"
    logger = logging.getLogger("asyncio")
    logger.addHandler(_SlowCallbackHandler(flags))
    logger.propagate = False
    del h
    return lambda: None


USE = {
    "loophound": use_loophound,
    "blockbuster": use_blockbuster,
    "pyleak": use_pyleak,
    "aiodebug": use_aiodebug,
    "asyncio-debug": use_asyncio_debug,
}


def main() -> None:
    tool, path, out = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
    result: dict[str, Any] = {"tool": tool, "scenario": path, "errors": []}
    began = time.perf_counter()
    h = Harness(path)
    flags = Flags(path)
    try:
        module = load_scenario(path)
        prepare = getattr(module, "prepare", None)
        if prepare is not None:
            prepare(h)
        stop = USE[tool](h, flags)
        try:
            run = getattr(module, "run", None)
            if run is not None:
                run(h)
            else:
                h.run(module.main)
        finally:
            stop()
    except BaseException as exc:
        result["errors"].append("".join(traceback.format_exception_only(exc)).strip())
    result["errors"].extend(h.errors)
    result["flags"] = flags.items
    result["quiet"] = flags.quiet
    result["ends"] = h.ends
    result["begins"] = h.begins
    result["seconds"] = time.perf_counter() - began
    Path(out).write_text(json.dumps(result), encoding="utf-8")
    shutil.rmtree(h.tmp, ignore_errors=True)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)  # helper threads and servers are not waited for


if __name__ == "__main__":
    main()
