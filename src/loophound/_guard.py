"""The process-wide guard: installs detectors, owns the dispatcher and the sinks."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

from loophound._allow import AllowRules
from loophound._config import Config, resolve_config, validate_allow
from loophound._context import allow_blocking, in_flight
from loophound._dispatch import Dispatcher, Sink, Suppressed
from loophound._events import Event, RequestRecord
from loophound._frames import FrameKinds
from loophound._recorder import Recorder, Stats
from loophound.detectors.audit import AuditDetector
from loophound.detectors.callbacks import CallbacksDetector, StepTracker
from loophound.detectors.patch_table import PATCHES, PatchSpec
from loophound.detectors.patches import PatchDetector
from loophound.detectors.watchdog import LoopDelays, Watchdog
from loophound.exceptions import ConfigurationError
from loophound.sinks.callback import CallbackSink
from loophound.sinks.jsonl import JsonlSink
from loophound.sinks.logging import LoggingSink
from loophound.sinks.memory import MemorySink
from loophound.sinks.warnings import WarningsSink

__all__ = ["Guard", "active_guard", "capture", "guard", "install"]

logger = logging.getLogger("loophound")
_lock = threading.RLock()
_Detector = AuditDetector | PatchDetector | CallbacksDetector | Watchdog
_active: Guard | None = None


class Guard:
    """An installed (or, with ``enabled=False``, inert) loophound guard.

    Made by ``loophound.install()``; ``uninstall()`` restores everything, delivers
    what was already detected and makes a new ``install()`` possible.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = Stats()
        self._installed = False
        self._detectors: list[_Detector] = []
        self._dispatcher: Dispatcher | None = None
        self._recorder: Recorder | None = None
        self._watchdog: Watchdog | None = None
        self._undo_async_unsafe: Callable[[], None] | None = None
        #: Lateness of every heartbeat of every watched loop (the loop-delay histogram).
        self.loop_delays = LoopDelays()

    @property
    def installed(self) -> bool:
        """True between a successful install and ``uninstall()``."""
        return self._installed

    def _build_sinks(self) -> list[Sink]:
        sinks: list[Sink] = []
        try:
            self._add_sinks(sinks)
        except BaseException:
            for sink in sinks:  # a later sink failed: close the files already opened
                sink.close()
            raise
        return sinks

    def _add_sinks(self, sinks: list[Sink]) -> None:
        for name in self.config.output_sinks():
            if name == "warnings":
                sinks.append(WarningsSink())
            elif name == "logging":
                sinks.append(LoggingSink())
            elif name == "jsonl" and self.config.jsonl is not None:
                try:
                    sinks.append(JsonlSink(self.config.jsonl))
                except OSError as exc:
                    raise ConfigurationError(
                        f"loophound: invalid value for jsonl: {self.config.jsonl!r}; "
                        f"it cannot be opened for append ({exc.strerror})."
                    ) from None
            elif name == "otel":
                sinks.append(self._otel_sink())
        if self.config.on_event is not None:
            sinks.append(CallbackSink(self.config.on_event))

    def _otel_sink(self) -> Sink:
        try:
            otel = importlib.import_module("loophound.sinks.otel")
        except ImportError as exc:
            raise ConfigurationError(
                "loophound: invalid value for sinks: 'otel' needs opentelemetry-api, which "
                f"is not importable ({exc}); pip install 'loophound[otel]', or choose from "
                "warnings, logging, jsonl."
            ) from None
        sink: Sink = otel.OtelSink(
            self.stats, self.loop_delays, self.config.tracer_provider, self.config.meter_provider
        )
        return sink

    def _install(self) -> None:
        if not self.config.enabled:
            return
        config = self.config
        extra_patches, self._undo_async_unsafe = _django_hooks(config)
        try:
            self._install_detectors(extra_patches)
        except Exception:
            self._restore_async_unsafe()
            raise

    def _restore_async_unsafe(self) -> None:
        undo, self._undo_async_unsafe = self._undo_async_unsafe, None
        if undo is not None:
            undo()

    def _install_detectors(self, extra_patches: tuple[PatchSpec, ...]) -> None:
        config = self.config
        wanted = config.detectors
        watching = "watchdog" in wanted
        timing = "callbacks" in wanted
        watchdog: Watchdog | None = None
        hold = 0.0
        if watching:
            # Calls wait this long for the stall they may be part of (two beats and
            # a sample), so that one stall is one incident.
            hold = 2 * Watchdog.interval_for(config.threshold) + 0.02
        dispatcher = Dispatcher(
            self._build_sinks(),
            self.stats,
            config.queue_size,
            config.max_frames,
            hold=hold,
            wait_for_stalls=watching,
            stalled_threads=lambda: self._held_threads(watchdog),
            suspended_since=lambda thread, since, until: (
                False if watchdog is None else watchdog.suspended_since(thread, since, until)
            ),
            ticked_since=self._ticked_since_of(lambda: watchdog) if watching else None,
            tick_ns=int(Watchdog.interval_for(config.threshold) * 1e9) if watching else 0,
        )
        recorder = Recorder(config, dispatcher.submit, self.stats)
        tracker = StepTracker() if timing else None
        recorder.tracker = tracker
        detectors: list[_Detector] = []
        if "patches" in wanted:
            detectors.append(PatchDetector(recorder, PATCHES + extra_patches))
        if timing and tracker is not None:
            callbacks = CallbacksDetector(config.threshold, tracker, dispatcher.submit)
            callbacks.on_step_end = recorder.end_step
            detectors.append(callbacks)
        if watching:
            watchdog = Watchdog(
                config.threshold,
                dispatcher.submit,
                recorder.kinds,
                config.max_frames,
                self.loop_delays,
                context_of=tracker.context_of if tracker is not None else None,
                parking=tracker.parked if tracker is not None else None,
                step_started=tracker.started_of if tracker is not None else None,
            )
            recorder.on_loop_change = self._loop_changed
            detectors.append(watchdog)
        if "audit" in wanted or watching:
            # The audit hook also discovers loops for the watchdog.
            detectors.append(AuditDetector(recorder, report_calls="audit" in wanted))
        dispatcher.start()
        done: list[_Detector] = []
        try:
            for detector in detectors:
                if isinstance(detector, Watchdog):
                    detector.start()
                else:
                    detector.install()
                done.append(detector)
        except Exception:
            self._stop_detectors(done)
            dispatcher.stop(config.flush_timeout)
            raise
        self._dispatcher, self._recorder, self._detectors = dispatcher, recorder, done
        self._watchdog = watchdog
        self._installed = True
        self.watch_loop()

    @staticmethod
    def _ticked_since_of(watchdog: Callable[[], Watchdog | None]) -> Callable[[int, int], bool]:
        """Ask the watchdog (made after the dispatcher) whether a loop ticked since then."""

        def ticked_since(thread: int, since: int) -> bool:
            current = watchdog()
            return current is not None and current.ticked_since(thread, since)

        return ticked_since

    def _held_threads(self, watchdog: Watchdog | None) -> frozenset[int]:
        """Loop threads whose incidents may still grow: stalled, or inside a primitive."""
        held = watchdog.stalled_threads() if watchdog is not None else frozenset()
        recorder = self._recorder
        if recorder is not None and recorder.busy:
            held |= frozenset(recorder.busy)
        return held

    def _loop_changed(self) -> None:
        """Called on a thread whose loop starts or stops running (audit hook)."""
        watchdog = self._watchdog
        if watchdog is None:
            return
        finalizer = sys.get_asyncgen_hooks().finalizer
        loop = getattr(finalizer, "__self__", None)
        thread = threading.current_thread()
        if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_closed():
            watchdog.watch(loop, thread.ident or 0, thread.name)
        else:
            watchdog.forget(thread.ident or 0)

    def _after_fork_in_child(self) -> None:
        """Make the threads and state a forked child needs (gunicorn ``--preload``).

        Only the forking thread survives a fork: the dispatcher and watchdog threads
        are started anew, the parent's loops and queued records are forgotten; the
        patches, the audit hook and the sinks carry over as they are.
        """
        if not self._installed:
            return
        if self._recorder is not None:
            self._recorder.forget_thread_state()
        if self._dispatcher is not None:
            self._dispatcher.after_fork_in_child()
        if self._watchdog is not None:
            self._watchdog.after_fork_in_child()

    def watch_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch ``loop`` (default: the loop running in this thread) for stalls.

        Loops that start after install are found by themselves; call this for a loop
        that was already running in another thread when the guard was installed.
        """
        watchdog = self._watchdog
        if watchdog is None:
            return
        if loop is None:
            loop = asyncio.events._get_running_loop()
            if loop is None:
                return
            thread = threading.current_thread()
            watchdog.watch(loop, thread.ident or 0, thread.name)
            return
        thread_id = getattr(loop, "_thread_id", None)
        if isinstance(thread_id, int):
            names = {t.ident: t.name for t in threading.enumerate()}
            watchdog.watch(loop, thread_id, names.get(thread_id, str(thread_id)))

    def watched_loops(self) -> list[asyncio.AbstractEventLoop]:
        """Return the loops the watchdog watches now."""
        return [] if self._watchdog is None else self._watchdog.watched()

    def _stop_detectors(self, detectors: list[_Detector]) -> None:
        for detector in reversed(detectors):
            try:
                if isinstance(detector, Watchdog):
                    detector.stop(self.config.flush_timeout)
                else:
                    detector.uninstall()
            except Exception:
                logger.exception("loophound: uninstalling %s failed", detector.name)

    def uninstall(self) -> None:
        """Restore every patch, deliver queued events, close sinks; idempotent.

        Logs the allow rules that never matched, so stale ones do not pile up.
        """
        global _active
        with _lock:
            if not self._installed:
                return
            self._installed = False
            if _active is self:
                _active = None  # at once: install() still waits for the lock below
            self._uninstall()

    def _uninstall(self) -> None:
        # Called on a loop thread, uninstall waits (the watchdog's thread joins while
        # the patches are still in place): loophound's own waits are never incidents.
        with allow_blocking("loophound uninstalls"):
            self._stop_everything()

    def _stop_everything(self) -> None:
        if self._watchdog is not None:
            self._watchdog.flush()
        self._stop_detectors(self._detectors)
        self._detectors = []
        self._watchdog = None
        recorder = self._recorder
        if recorder is not None:
            # Calls still inside a patched primitive submit when they return: give them
            # until flush_timeout, unless it is this very thread that is inside one.
            deadline = time.monotonic() + self.config.flush_timeout
            me = threading.get_ident()
            while recorder.busy - {me} and time.monotonic() < deadline:
                time.sleep(0.005)
            self._submit_suppressed()
            unused = recorder.allow.unused()
            if unused:
                logger.warning("loophound: these allow rules never matched: %s", ", ".join(unused))
            self._unused = unused
            recorder.forget_thread_state()
        if self._dispatcher is not None:
            self._dispatcher.stop(self.config.flush_timeout)
        self._restore_async_unsafe()

    def unused_allow_rules(self) -> tuple[str, ...]:
        """Return the configured allow rules that have not matched any call yet."""
        if self._recorder is not None:
            return self._recorder.allow.unused()
        return getattr(self, "_unused", ())

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event detected so far reached the sinks; False on timeout."""
        if self._dispatcher is None:
            return True
        if self._watchdog is not None:
            self._watchdog.flush()
        self._submit_suppressed()
        return self._dispatcher.flush(self.config.flush_timeout if timeout is None else timeout)

    def _submit_suppressed(self) -> None:
        """Hand the rate cap's uncounted calls to the sinks that count (metrics)."""
        recorder, dispatcher = self._recorder, self._dispatcher
        if recorder is not None and dispatcher is not None:
            counts = recorder.drain_suppressed()
            if counts:
                dispatcher.submit(Suppressed(counts))

    @contextlib.contextmanager
    def extra_allow(self, rules: Iterable[str], source: str = "argument") -> Iterator[AllowRules]:
        """Allow more rules for a block (per-test rules of the pytest plugin).

        Yields the combined rules; their ``used`` set says which rules matched in the
        block. Raises ``ConfigurationError`` for a malformed rule.
        """
        extra = validate_allow(tuple(rules), source)
        recorder = self._recorder
        if recorder is None:
            yield AllowRules(extra, FrameKinds())
            return
        base = recorder.allow
        combined = AllowRules((*base.rules, *extra), recorder.kinds)
        recorder.allow = combined
        try:
            yield combined
        finally:
            recorder.allow = base
            base.used |= combined.used & set(base.rules)

    def wants_requests(self) -> bool:
        """Whether a sink takes request records now (the jsonl file, DEBUG logging)."""
        dispatcher = self._dispatcher
        return dispatcher is not None and dispatcher.wants_requests()

    def record_request(self, record: RequestRecord) -> None:
        """Hand a served request to the sinks that take requests (from any thread)."""
        if self._dispatcher is not None:
            self._dispatcher.submit(record)

    def add_sink(self, sink: Sink) -> None:
        """Send events to one more sink (used by ``capture()`` and adapters)."""
        if self._dispatcher is not None:
            self._dispatcher.add_sink(sink)

    def remove_sink(self, sink: Sink) -> None:
        """Stop sending events to a sink added with ``add_sink``."""
        if self._dispatcher is not None:
            self._dispatcher.remove_sink(sink)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        state = "installed" if self._installed else "not installed"
        return f"<loophound.Guard {state} detectors={list(self.config.detectors)}>"


@functools.cache
def _uninstall_at_exit() -> None:
    """Once per process: at interpreter exit, deliver queued events and close sinks."""

    def uninstall() -> None:
        current = _active
        if current is not None:
            current.uninstall()

    atexit.register(uninstall)


def _django_hooks(config: Config) -> tuple[tuple[PatchSpec, ...], Callable[[], None] | None]:
    """Return Django's cursor primitives and turn soft mode on, when Django is in use.

    The Django adapter is loaded by name, only when Django is already imported: the
    core never imports Django itself.
    """
    if "django" not in sys.modules:
        if config.async_unsafe != "raise":
            raise ConfigurationError(
                f"loophound: invalid value for async_unsafe: {config.async_unsafe!r}; it "
                "is about Django's ORM and Django is not imported in this process. Valid "
                "values: raise, report, force-report."
            )
        return (), None
    adapter = importlib.import_module("loophound.django_db")
    specs: tuple[PatchSpec, ...] = adapter.patch_specs()
    undo: Callable[[], None] | None = adapter.apply_async_unsafe(config.async_unsafe)
    return specs, undo


def _after_fork_in_child() -> None:
    global _lock
    # Another thread of the parent may have held the lock at the fork: it never
    # releases it here.
    _lock = threading.RLock()
    in_flight.clear()
    current = _active
    if current is not None:
        try:
            current._after_fork_in_child()
        except Exception:
            logger.exception("loophound: restarting in a forked child failed")


os.register_at_fork(after_in_child=_after_fork_in_child)


def active_guard() -> Guard | None:
    """Return the installed guard of this process, if any."""
    return _active


def install(**config: Any) -> Guard:
    """Install the process-wide guard and return it.

    Settings come from the keyword arguments, then ``LOOPHOUND_*`` environment
    variables; a bad one raises ``ConfigurationError`` before anything is patched.
    With ``LOOPHOUND_ENABLED=0`` (or ``enabled=False``) nothing is installed and an
    inert guard is returned.
    """
    global _active
    resolved = resolve_config(config)
    with _lock:
        if _active is not None:
            raise ConfigurationError(
                "loophound: a guard is already installed in this process; call "
                "uninstall() on it first (loophound.active_guard()), or use "
                "loophound.capture() to collect events from the installed one."
            )
        new = Guard(resolved)
        new._install()
        if new.installed:
            _active = new
            _uninstall_at_exit()
        return new


@contextlib.contextmanager
def guard(**config: Any) -> Iterator[Guard]:
    """Install a guard for the ``with`` block and uninstall it at the end."""
    installed = install(**config)
    try:
        yield installed
    finally:
        installed.uninstall()


class CapturedEvents(list[Event]):
    """The events a ``capture()`` block collected (a list), and the guard it used."""

    guard: Guard | None = None


@contextlib.contextmanager
def capture(**config: Any) -> Iterator[CapturedEvents]:
    """Collect events in memory; at exit, wait until every detected event arrived.

    Installs a guard with ``config`` when none is active; otherwise attaches to the
    active guard (and then takes no settings of its own).
    """
    events = CapturedEvents()
    sink = MemorySink(events)
    with _lock:
        current = _active
        if current is not None and config:
            raise ConfigurationError(
                "loophound: capture() got settings "
                + ", ".join(sorted(config))
                + " but a guard is already installed with its own; call capture() "
                "without arguments, or uninstall the active guard first."
            )
        owned = current is None
        if owned:
            current = install(**config)
        else:
            assert current is not None
            current.flush()
    events.guard = current
    current.add_sink(sink)
    try:
        yield events
    finally:
        current.flush()
        current.remove_sink(sink)
        if owned:
            current.uninstall()
