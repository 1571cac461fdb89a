"""Events for what the timing detectors saw: sampled stalls and slow loop steps."""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Callable
from types import CodeType
from typing import Any

from loophound._context import allowed_reason_in, request_in
from loophound._events import Event, EventKind, Frame
from loophound.detectors.callbacks import StepRecord
from loophound.detectors.watchdog import StallRecord

__all__ = ["StallEvents"]

#: Below this share of the stall's wall time in CPU, the loop thread was waiting.
_CPU_SHARE = 0.2

FrameOf = Callable[[CodeType, int], Frame]
FingerprintOf = Callable[[str, CodeType | None, Frame | None], str]


def _label(frame: Frame) -> str:
    # flamegraph.pl and speedscope split on ';' and on the last space: keep both out.
    return f"{frame.function} ({frame.filename}:{frame.lineno})".replace(";", ",").replace(
        " ", "\u00a0"
    )


def _task_name(task: object) -> str | None:
    if isinstance(task, asyncio.Task):
        try:
            return task.get_name()
        except Exception:
            return None
    return None


class StallEvents:
    """Builds ``stall`` and ``slow_callback`` events on the dispatcher thread."""

    def __init__(self, frame_of: FrameOf, fingerprint: FingerprintOf, pid: int) -> None:
        self._frame_of = frame_of
        self._fingerprint = fingerprint
        self.pid = pid
        self.allowed = 0

    def stall(self, stall: StallRecord) -> Event | None:
        """Return the event of a sampled stall, or ``None`` inside an allow scope."""
        if stall.allowed or allowed_reason_in(stall.context) is not None:
            self.allowed += 1
            return None
        counts: Counter[tuple[CodeType, int]] = Counter()
        for sample in stall.samples:
            if sample.culprit >= 0:
                counts[sample.codes[sample.culprit]] += 1
        frames: tuple[Frame, ...] = ()
        culprit: Frame | None = None
        key_code: CodeType | None = None
        if counts:
            (key_code, key_line), _ = counts.most_common(1)[0]
            culprit = self._frame_of(key_code, key_line)
            for sample in stall.samples:
                if sample.culprit >= 0 and sample.codes[sample.culprit] == (key_code, key_line):
                    frames = tuple(self._frame_of(c, n) for c, n in reversed(sample.codes))
                    break
        folded: Counter[str] = Counter()
        for sample in stall.samples:
            folded[";".join(_label(self._frame_of(c, n)) for c, n in reversed(sample.codes))] += 1
        duration = stall.duration_ns / 1e9
        operation = "stall"
        if stall.cpu is not None:
            # A waiting thread uses next to no CPU; a computing one gets its share of a
            # core even on a loaded machine, where that share may fall well below half.
            operation = "cpu" if stall.cpu >= duration * _CPU_SHARE else "blocked"
        return self._event(
            "stall",
            operation,
            stall.started_ns,
            duration,
            frames,
            culprit,
            key_code,
            stall.thread_id,
            stall.thread_name,
            _task_name(stall.task),
            ("watchdog",),
            stall.request,
            samples=dict(folded),
            loop_cpu=stall.cpu,
            victims=stall.victims,
            parent=stall.span,
        )

    def step(self, step: StepRecord) -> Event | None:
        """Return the event of a slow loop step seen only by the callbacks detector."""
        if allowed_reason_in(step.context) is not None:
            self.allowed += 1
            return None
        callback = step.callback
        task = getattr(callback, "__self__", None)
        code: CodeType | None = None
        line = 0
        if isinstance(task, asyncio.Task):
            coro = task.get_coro()
            frame = getattr(coro, "cr_frame", None)
            if frame is not None:
                code, line = frame.f_code, frame.f_lineno
            elif inspect.iscoroutine(coro):
                code = coro.cr_code
                line = code.co_firstlineno
        else:
            func = getattr(callback, "__func__", callback)
            code = getattr(func, "__code__", None)
            line = code.co_firstlineno if code is not None else 0
        culprit = self._frame_of(code, line) if code is not None else None
        return self._event(
            "slow_callback",
            "slow_callback",
            step.started_ns,
            step.duration_ns / 1e9,
            (culprit,) if culprit is not None else (),
            culprit,
            code,
            step.thread_id,
            step.thread_name,
            _task_name(task),
            ("callbacks",),
            request_in(step.context),
            parent=step.span,
        )

    def _event(
        self,
        kind: EventKind,
        operation: str,
        started_at: int,
        duration: float,
        frames: tuple[Frame, ...],
        culprit: Frame | None,
        key_code: CodeType | None,
        thread_id: int,
        thread_name: str,
        task: str | None,
        detectors: tuple[str, ...],
        request: Any,
        **extra: Any,
    ) -> Event:
        return Event(
            kind=kind,
            operation=operation,
            started_at=started_at,
            duration=duration,
            frames=frames,
            culprit=culprit,
            fingerprint=self._fingerprint(operation, key_code, culprit),
            thread_id=thread_id,
            thread_name=thread_name,
            task=task,
            detectors=detectors,
            request=request,
            pid=self.pid,
            **extra,
        )
