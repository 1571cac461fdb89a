"""One incident per stall: merges what the four detectors saw, on the dispatcher thread.

A patched ``time.sleep(0.3)`` is also a slow loop step (callbacks) and a late beat
(watchdog). The merger holds call events briefly, until the step that made them ended
(or, without step boundaries, until the loop moved on), then delivers one event per
incident: the call's exact line and name, the step's or stall's real duration, the
sampled stacks, and every detector that saw it. The primitives of one user call
(``subprocess.run`` -> ``Popen``, ``wait``) arrive as one group and become one event
named after the function the user called.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

from loophound._events import Event
from loophound._recorder import RawIncident
from loophound.detectors.callbacks import StepRecord
from loophound.detectors.watchdog import StallRecord

__all__ = ["Merger"]

_perf_ns = time.perf_counter_ns
#: Longest a call event waits for the end of its step before it is delivered anyway.
_MAX_HOLD_NS = 30_000_000_000
_MAX_PRIMITIVES = 32
#: How long the first primitive of a library call waits for the rest of that call.
_GROUP_HOLD_NS = 20_000_000
#: When a call held for its step's end first asks whether its loop has ticked since:
#: the step's end record may have been dropped (a full queue), and waiting out the
#: whole hold would delay the call by 30 s.
_STEP_RECHECK_NS = 500_000_000
_RECHECK_NS = 5_000_000
#: How long a slow step waits past its deadline for the watchdog to look at its loop
#: again (after a SIGCONT every thread resumes, and the loop's may end the step first).
_UNKNOWN_HOLD_NS = 1_000_000_000
_CLOCKS_MARGIN_NS = 1_000_000


class _Group:
    __slots__ = ("born", "deadline", "first", "hold_until", "raws", "step", "thread_id")

    def __init__(self, raw: RawIncident, deadline: int, hold_until: int = 0) -> None:
        self.born = _perf_ns()
        self.first = raw
        self.raws = [raw]
        self.step = raw.step
        self.thread_id = raw.thread_id
        self.deadline = deadline
        #: Without step boundaries: the latest it is held, ending sooner once the loop
        #: ticks again (its step is over, so no stall can still grow out of it).
        self.hold_until = hold_until

    def start_ns(self) -> int:
        return self.first.started_at

    def timed(self) -> float:
        return sum(r.duration for r in self.raws if r.duration is not None)


class _SlowStep:
    __slots__ = ("born", "deadline", "event", "fallback", "step")

    def __init__(
        self, step: StepRecord, event: Event, fallback: Event | None, deadline: int, born: int
    ) -> None:
        self.step = step
        self.born = born
        self.event = event
        #: What to deliver if the watchdog saw no stall and the process was suspended
        #: meanwhile (SIGSTOP: not the loop's fault): the call as it was, or nothing.
        self.fallback = fallback
        self.deadline = deadline


class Merger:
    """Turns raw calls, step records and stall records into delivered Events."""

    def __init__(
        self,
        build: Callable[[RawIncident], Event],
        build_stall: Callable[[StallRecord], Event | None],
        build_step: Callable[[StepRecord], Event | None],
        *,
        hold_ns: int,
        wait_for_stalls: bool,
        stalled_threads: Callable[[], frozenset[int]],
        suspended_since: Callable[[int, int, int | None], bool | None] | None = None,
        ticked_since: Callable[[int, int], bool] | None = None,
        tick_ns: int = 0,
    ) -> None:
        self._build = build
        self._build_stall = build_stall
        self._build_step = build_step
        self._hold_ns = hold_ns
        self._wait_for_stalls = wait_for_stalls
        self._stalled_threads = stalled_threads
        self._suspended_since = suspended_since
        self._ticked_since = ticked_since
        #: A loop without step boundaries shows its step ended by ticking: look again
        #: after about one tick, instead of waiting out the whole hold.
        self._early_ns = tick_ns + _RECHECK_NS if ticked_since is not None and tick_ns else 0
        self._groups: dict[int, _Group] = {}
        self._epoch_offset = time.time_ns() - _perf_ns()
        self._slow: list[_SlowStep] = []
        #: When (perf ns) ``due`` first found records still queued; 0 while it is empty.
        self._queued_since = 0

    # -- input ---------------------------------------------------------------------------

    def add(self, item: object) -> list[Event]:
        """Take one item from the queue; return the events now complete."""
        now = _perf_ns()
        if isinstance(item, RawIncident):
            return self._add_call(item, now)
        if isinstance(item, StepRecord):
            return self._add_step(item, now)
        if isinstance(item, StallRecord):
            return self._add_stall(item)
        return []

    def _add_call(self, raw: RawIncident, now: int) -> list[Event]:
        if raw.continuation:
            group = self._groups.get(raw.group)
            if group is not None and len(group.raws) < _MAX_PRIMITIVES:
                group.raws.append(raw)
            return []
        hold = self._hold_ns
        if raw.anchor_name is not None:
            hold = max(hold, _GROUP_HOLD_NS)  # its further primitives may follow
        if raw.step == 0 and hold == 0:
            return [self._build(raw)]
        if raw.step:
            first_look = _STEP_RECHECK_NS if self._ticked_since is not None else _MAX_HOLD_NS
            self._groups[raw.group] = _Group(raw, now + first_look, hold_until=now + _MAX_HOLD_NS)
        elif self._early_ns:
            early = min(hold, max(self._early_ns, _GROUP_HOLD_NS if raw.anchor_name else 0))
            self._groups[raw.group] = _Group(raw, now + early, hold_until=now + hold)
        else:
            self._groups[raw.group] = _Group(raw, now + hold)
        return []

    def _take_groups(self, predicate: Callable[[_Group], bool]) -> list[_Group]:
        found = [g for g in self._groups.values() if predicate(g)]
        for group in found:
            del self._groups[group.first.group]
        return found

    def _add_step(self, step: StepRecord, now: int) -> list[Event]:
        groups = self._take_groups(lambda g: g.step == step.handle_id)
        if not step.slow:
            return [self.group_event(g) for g in groups]
        out: list[Event] = []
        merged: Event | None = None
        fallback: Event | None = None
        if groups:
            main = max(groups, key=lambda g: g.timed())
            out.extend(self.group_event(g) for g in groups if g is not main)
            fallback = self.group_event(main)
            explained = sum(g.timed() for g in groups)
            if explained * 2 >= step.duration_ns / 1e9:  # the calls explain the step
                merged = _with(
                    fallback,
                    duration=step.duration_ns / 1e9,
                    started_at=min(step.started_ns, main.start_ns()),
                    detectors=("callbacks",),
                )
            else:
                # Short calls in a step that was slow for another reason (CPU after
                # them): each call is an incident, the rest of the step another, named
                # by the stall's samples.
                out.append(fallback)
                fallback = None
                merged = self._build_step(step)
        else:
            merged = self._build_step(step)
        if merged is None:
            return out
        if self._wait_for_stalls:
            self._slow.append(_SlowStep(step, merged, fallback, now + self._hold_ns, now))
        else:
            out.append(merged)
        return out

    def _add_stall(self, stall: StallRecord) -> list[Event]:
        start = stall.started_ns
        end = start + stall.duration_ns
        for slow in self._slow:
            s = slow.step
            if (
                s.thread_id == stall.thread_id
                and s.started_ns <= end
                and start <= (s.started_ns + s.duration_ns)
            ):
                self._slow.remove(slow)
                if stall.allowed:
                    return [] if slow.fallback is None else [slow.fallback]
                if slow.event.kind != "slow_callback":
                    return [self._absorb(slow.event, stall, keep_duration=True)]
                # No named call explains the step: the stall's samples name the line,
                # the step's timing gives the exact interval.
                event = self._build_stall(stall)
                if event is None:
                    return []
                if event.culprit is None:
                    # No sample caught the step in the act: name the task's coroutine.
                    event = dataclasses.replace(
                        event,
                        culprit=slow.event.culprit,
                        frames=slow.event.frames,
                        task=event.task or slow.event.task,
                    )
                return [
                    _with(
                        event,
                        duration=s.duration_ns / 1e9,
                        started_at=s.started_ns,
                        detectors=("callbacks",),
                    )
                ]
        groups = self._take_groups(
            lambda g: (
                g.thread_id == stall.thread_id
                and g.step == 0
                and start - self._hold_ns <= g.start_ns() <= end
            )
        )
        if groups:
            main = max(groups, key=lambda g: g.timed())
            rest = [self.group_event(g) for g in groups if g is not main]
            event = self.group_event(main)
            return [*rest, self._absorb(event, stall, keep_duration=False)]
        if stall.steps_timed and not stall.samples and self._wait_for_stalls:
            # Seen only as a late tick, after it ended, on a loop whose every step is
            # timed, and no step was slow: the process was starved of CPU, the loop
            # did not hold anything up.
            return []
        event = self._build_stall(stall)
        return [] if event is None else [event]

    def _absorb(self, event: Event, stall: StallRecord, *, keep_duration: bool) -> Event:
        """Add a stall's samples and duration to the event that explains it."""
        stall_event = self._build_stall(stall)
        samples = stall_event.samples if stall_event is not None else None
        stalled_for = stall.duration_ns / 1e9
        duration = event.duration if keep_duration else max(event.duration or 0.0, stalled_for)
        return _with(
            event,
            duration=duration,
            started_at=min(event.started_at, stall.started_ns),
            detectors=("watchdog",),
            samples=samples,
            loop_cpu=stall.cpu,
            victims=stall.victims,
            parent=event.parent if event.parent is not None else stall.span,
        )

    # -- time ----------------------------------------------------------------------------

    def due(self, queue_empty: Callable[[], bool] | None = None) -> list[Event]:
        """Return events whose hold expired (call groups, slow steps without a stall).

        ``queue_empty`` is asked after the held threads are read: a thread leaves a
        primitive only after queueing it, so an empty queue then means nothing more
        of its call is on the way.
        """
        now = _perf_ns()
        out: list[Event] = []
        stalled = self._stalled_threads() if self._groups else frozenset()
        if queue_empty is not None and not queue_empty():
            # Records still queued may belong to a held call: take them first. Measured
            # from when the queue was first seen busy, so that the first look after a
            # quiet spell waits too, and a flood postpones this by _RECHECK_NS at most.
            if not self._queued_since:
                self._queued_since = now
            if now - self._queued_since < _RECHECK_NS:
                return out
        self._queued_since = 0
        # A call without step boundaries stays held while its loop thread is still
        # stalled or inside a primitive, so that what follows can join it; re-checked
        # every few milliseconds, never longer than _MAX_HOLD_NS.
        expired = []
        ended_steps = []
        for group in list(self._groups.values()):
            if now < group.deadline:
                continue
            if group.step:
                if now >= group.hold_until:
                    expired.append(group)
                    del self._groups[group.first.group]
                elif self._step_over(group):
                    ended_steps.append(group)
                else:
                    group.deadline = now + _RECHECK_NS
                continue
            if group.step == 0 and group.thread_id in stalled and now - group.born < _MAX_HOLD_NS:
                group.deadline = now + _RECHECK_NS
                continue
            if (
                now < group.hold_until
                and self._ticked_since is not None
                and not self._ticked_since(group.thread_id, group.born)
            ):
                group.deadline = now + _RECHECK_NS  # the step may still be running
                continue
            expired.append(group)
            del self._groups[group.first.group]
        if ended_steps and (queue_empty is None or queue_empty()):
            # Read after the ticks: a step that ended before its loop ticked queued its
            # end record before that tick, so an empty queue now means the record was
            # dropped, never that it is still on its way.
            for group in ended_steps:
                expired.append(group)
                del self._groups[group.first.group]
        else:
            for group in ended_steps:
                group.deadline = now + _RECHECK_NS
        out.extend(self.group_event(g) for g in expired)
        keep = []
        for slow in self._slow:
            if now >= slow.deadline:
                # No stall came: the watchdog's tick was late by less than the threshold
                # (a step just over it) or the process was suspended.
                suspended = self._suspended(slow.step, ended=True)
                if suspended is None and now - slow.born < _UNKNOWN_HOLD_NS:
                    slow.deadline = now + _RECHECK_NS  # the watchdog has not looked yet
                    keep.append(slow)
                    continue
                event = slow.fallback if suspended else slow.event
                if event is not None:
                    out.append(event)
            else:
                keep.append(slow)
        self._slow = keep
        return out

    def _step_over(self, group: _Group) -> bool:
        """True when the loop ticked or stopped after the call: its step has ended."""
        ticked = self._ticked_since
        if ticked is None:
            return False
        # The call's epoch start on the perf clock, with a margin for the two clocks.
        called = group.start_ns() - self._epoch_offset + _CLOCKS_MARGIN_NS
        return ticked(group.thread_id, called)

    def _suspended(self, step: StepRecord, *, ended: bool = False) -> bool | None:
        """Whether the process stood still during ``step``; ``None``: not known yet.

        ``ended`` asks for a verdict that covers the step's end (else any suspension
        seen so far counts, and not knowing is not suspended).
        """
        check = self._suspended_since
        if check is None:
            return False
        end = step.started_ns + step.duration_ns if ended else None
        return check(step.thread_id, step.started_ns, end)

    def next_deadline(self) -> int | None:
        """Return when ``due()`` should next be called (perf_counter ns), if ever."""
        deadlines = [g.deadline for g in self._groups.values()]
        deadlines.extend(s.deadline for s in self._slow)
        return min(deadlines) if deadlines else None

    def drain(self) -> list[Event]:
        """Deliver everything held (at flush and uninstall)."""
        out = [self.group_event(g) for g in self._take_groups(lambda _g: True)]
        for slow in self._slow:
            event = slow.fallback if self._suspended(slow.step) else slow.event
            if event is not None:
                out.append(event)
        self._slow = []
        return out

    # -- composing -----------------------------------------------------------------------

    def group_event(self, group: _Group) -> Event:
        """Return the one event of a user call made of one or more primitives."""
        event = self._build(group.first)
        if len(group.raws) == 1:
            return event
        operations = tuple(r.operation for r in group.raws)
        name = event.operation
        if len(set(operations)) > 1 and group.first.anchor_name is not None:
            module, qualname = group.first.anchor_name
            name = f"{module}.{qualname}" if module else qualname
        # The user call lasted from its first primitive to the end of its last timed one.
        ends = [r.started_at + int(r.duration * 1e9) for r in group.raws if r.duration is not None]
        duration = (max(ends) - group.first.started_at) / 1e9 if ends else None
        detectors = tuple(dict.fromkeys(r.detector for r in group.raws))
        return dataclasses.replace(
            event,
            operation=name,
            primitives=operations,
            duration=duration,
            detectors=tuple(dict.fromkeys((*event.detectors, *detectors))),
        )


def _with(event: Event, *, detectors: Iterable[str] = (), **changes: Any) -> Event:
    merged = tuple(dict.fromkeys((*event.detectors, *detectors)))
    return dataclasses.replace(event, detectors=merged, **changes)
