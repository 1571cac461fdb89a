"""One streaming pass over the records: groups, folded stacks, a timeline, requests.

Memory is bounded whatever the log's size: groups hold counters and a quantile
sketch, never the events; routes per group, distinct stacks and timeline cells are
capped (what overflows is counted under ``other``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loophound.report.sketch import Sketch

__all__ = ["GROUPINGS", "Group", "RouteRequests", "Summary", "summarize"]

GROUPINGS = ("culprit", "route", "operation")
NO_ROUTE = "(no request)"
OTHER = "(other)"
_ROUTES_PER_GROUP = 50
_OPS = 20
_STACKS = 20_000
_TIMELINE_CELLS = 200_000
_GROUPS = 100_000
#: A duration beyond a day is a corrupt line, not a stall (and ``inf`` breaks the sketch).
_LONGEST = 86_400.0
#: Timeline cells are this wide (ns): a minute.
TIMELINE_STEP = 60 * 1_000_000_000


@dataclass
class Group:
    """The incidents of one culprit, route or operation."""

    key: str
    file: str | None = None
    line: int | None = None
    function: str | None = None
    count: int = 0
    total: float = 0.0
    maximum: float = 0.0
    first_seen: int = 0
    last_seen: int = 0
    sketch: Sketch = field(default_factory=Sketch)
    operations: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    pids: set[int] = field(default_factory=set)

    def add(self, record: Mapping[str, Any], duration: float | None, route: str) -> None:
        """Count one incident (on the hot path of a million-line log: plain dict work)."""
        started = record["started_at"]
        if not self.count or started < self.first_seen:
            self.first_seen = started
        if started > self.last_seen:  # noqa: PLR1730 - cheaper than max() per line
            self.last_seen = started
        suppressed = record.get("suppressed")
        self.count += 1 + suppressed if isinstance(suppressed, int) and suppressed > 0 else 1
        if duration is not None:
            self.total += duration
            if duration > self.maximum:  # noqa: PLR1730 - cheaper than max() per line
                self.maximum = duration
            self.sketch.add(duration)
        operation = record.get("operation")
        _bounded_add(self.operations, operation if isinstance(operation, str) else "?", _OPS)
        _bounded_add(self.routes, route, _ROUTES_PER_GROUP)
        kind = record.get("kind")
        kinds = self.kinds
        label = kind if isinstance(kind, str) else "?"
        kinds[label] = kinds.get(label, 0) + 1
        pid = record.get("pid")
        if pid not in self.pids and isinstance(pid, int) and len(self.pids) < 1000:
            self.pids.add(pid)

    def quantile(self, q: float) -> float | None:
        """Return a duration quantile in seconds (1 % relative error)."""
        return self.sketch.quantile(q)

    def location(self) -> str:
        """Return ``file:line`` of the culprit, or ``?``."""
        if self.file is None:
            return "?"
        return f"{self.file}:{self.line}"


@dataclass
class RouteRequests:
    """Served requests of one route, from ``"kind": "request"`` records."""

    count: int = 0
    hops: int = 0
    wait: float = 0.0
    run: float = 0.0


@dataclass
class Summary:
    """Everything a report shows, built in one pass."""

    by: str
    groups: dict[str, Group] = field(default_factory=dict)
    #: Folded stacks weighted by milliseconds the loop was blocked.
    stacks: dict[str, float] = field(default_factory=dict)
    #: (route, minute start ns) -> incidents.
    timeline: Counter[tuple[str, int]] = field(default_factory=Counter)
    requests: dict[str, RouteRequests] = field(default_factory=dict)
    incidents: int = 0
    quiet: int = 0
    first_seen: int | None = None
    last_seen: int | None = None

    def ranked(self, top: int | None = None) -> list[Group]:
        """Return the groups by total blocked time, then count."""
        groups = sorted(self.groups.values(), key=lambda g: (-g.total, -g.count, g.key))
        return groups if top is None else groups[:top]


def _int(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _bounded_add(counter: Counter[str], key: str, limit: int) -> None:
    count = counter.get(key)
    if count is not None:
        counter[key] = count + 1
    elif len(counter) < limit:
        counter[key] = 1
    else:
        counter[OTHER] = counter.get(OTHER, 0) + 1


def _duration(record: Mapping[str, Any]) -> float | None:
    value = record.get("duration")
    if isinstance(value, int | float) and 0 <= value < _LONGEST:
        return float(value)
    return None


def _route(record: Mapping[str, Any]) -> str:
    request = record.get("request")
    if isinstance(request, dict):
        route = request.get("route") or request.get("path")
        if isinstance(route, str) and route:
            return route
    return NO_ROUTE


def _culprit(record: Mapping[str, Any]) -> tuple[str | None, int | None, str | None]:
    culprit = record.get("culprit")
    if isinstance(culprit, dict):
        file, line, function = culprit.get("file"), culprit.get("line"), culprit.get("function")
        return (
            file if isinstance(file, str) else None,
            line if isinstance(line, int) else None,
            function if isinstance(function, str) else None,
        )
    return None, None, None


def frame_label(frame: Mapping[str, Any]) -> str:
    """Return a frame as the watchdog labels sampled frames: ``function (file:line)``."""
    text = f"{frame.get('function', '?')} ({frame.get('file', '?')}:{frame.get('line', '?')})"
    # flamegraph.pl and speedscope split on ';' and on the last space.
    return text.replace(";", ",").replace(" ", "\u00a0")


_LABELS: dict[tuple[object, object, object], str] = {}


def _label(frame: Mapping[str, Any]) -> str:
    key = (frame.get("function"), frame.get("file"), frame.get("line"))
    label = _LABELS.get(key)
    if label is None:
        label = frame_label(frame)
        if len(_LABELS) < 100_000:
            _LABELS[key] = label
    return label


class _Builder:
    def __init__(self, by: str, since: int | None) -> None:
        self.summary = Summary(by)
        self.since = since

    def add(self, record: Mapping[str, Any]) -> None:
        started = record["started_at"]
        if self.since is not None and started < self.since:
            return
        if record.get("kind") == "request":
            self._add_request(record)
            return
        if record.get("quiet"):
            self.summary.quiet += 1
            return
        summary = self.summary
        summary.incidents += 1
        if summary.first_seen is None or started < summary.first_seen:
            summary.first_seen = started
        if summary.last_seen is None or started > summary.last_seen:
            summary.last_seen = started
        duration = _duration(record)
        route = _route(record)
        group = self._group(record, route)
        group.add(record, duration, route)
        self._add_stacks(record, duration)
        cell = (route, started - started % TIMELINE_STEP)
        if cell in summary.timeline or len(summary.timeline) < _TIMELINE_CELLS:
            summary.timeline[cell] += 1

    def _group(self, record: Mapping[str, Any], route: str) -> Group:
        file, line, function = _culprit(record)
        by = self.summary.by
        if by == "route":
            key = route
        elif by == "operation":
            key = str(record.get("operation", "?"))
        else:
            fingerprint = record.get("fingerprint")
            key = fingerprint if isinstance(fingerprint, str) else f"{file}:{line}"
        groups = self.summary.groups
        group = groups.get(key)
        if group is None:
            if len(groups) >= _GROUPS:
                key = OTHER
                group = groups.get(key)
            if group is None:
                group = Group(key)
                if by == "culprit":
                    group.file, group.line, group.function = file, line, function
                groups[key] = group
        return group

    def _add_stacks(self, record: Mapping[str, Any], duration: float | None) -> None:
        blocked_ms = (duration or 0.0) * 1000
        samples = record.get("samples")
        if isinstance(samples, dict) and samples:
            total = sum(v for v in samples.values() if isinstance(v, int) and v > 0)
            for stack, count in samples.items():
                if isinstance(stack, str) and isinstance(count, int) and count > 0 and total:
                    self._add_stack(stack, blocked_ms * count / total)
            return
        frames = record.get("frames")
        if isinstance(frames, list) and frames:
            stack = ";".join([_label(f) for f in frames if isinstance(f, dict)])
            self._add_stack(stack, blocked_ms)

    def _add_stack(self, stack: str, weight_ms: float) -> None:
        stacks = self.summary.stacks
        if stack not in stacks and len(stacks) >= _STACKS:
            stack = OTHER
        stacks[stack] = stacks.get(stack, 0.0) + max(weight_ms, 0.001)

    def _add_request(self, record: Mapping[str, Any]) -> None:
        route = _route(record)
        requests = self.summary.requests
        entry = requests.get(route)
        if entry is None:
            if len(requests) >= _GROUPS:
                return
            entry = requests[route] = RouteRequests()
        entry.count += 1
        hops = record.get("thread_hops")
        if isinstance(hops, dict):
            entry.hops += _int(hops.get("count"))
            for name in ("wait", "run"):
                value = hops.get(name)
                if isinstance(value, int | float) and value > 0:
                    setattr(entry, name, getattr(entry, name) + float(value))


def summarize(
    records: Iterable[Mapping[str, Any]], by: str = "culprit", since: int | None = None
) -> Summary:
    """Aggregate records (one pass); ``since`` is epoch ns; ``by`` one of GROUPINGS."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}")
    builder = _Builder(by, since)
    for record in records:
        builder.add(record)
    return builder.summary
