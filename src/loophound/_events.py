"""The event model every detector produces: frames, culprit, fingerprint, text."""

from __future__ import annotations

import hashlib
import linecache
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Event", "EventKind", "Frame", "RequestRecord", "fingerprint_of"]

EventKind = Literal["call", "stall", "slow_callback"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a stack: where the code was when loophound looked."""

    filename: str
    lineno: int
    function: str

    def location(self) -> str:
        """Return ``file:line``, the form editors and terminals make clickable."""
        return f"{self.filename}:{self.lineno}"


@dataclass(frozen=True, slots=True)
class Event:
    """One incident: something held the event loop's thread.

    ``frames`` run outermost first and innermost last, as in a traceback; ``culprit`` is
    the innermost frame in the user's code (see ``code_roots`` in the README).
    ``duration`` is in seconds, ``None`` when the detector could not time the call (an
    audit event is a notification, not a call with an end). ``started_at`` is in
    nanoseconds since the epoch.
    """

    kind: EventKind
    operation: str
    started_at: int
    duration: float | None
    frames: tuple[Frame, ...]
    culprit: Frame | None
    fingerprint: str
    thread_id: int
    thread_name: str
    task: str | None
    detectors: tuple[str, ...]
    request: Mapping[str, str] | None = None
    detail: str | None = None
    #: Module loads are quiet by default: callbacks, memory, jsonl and metrics see
    #: them, warnings and logging do not (see the ``imports`` setting).
    quiet: bool = False
    #: Incidents with this fingerprint dropped by the rate cap since the last one
    #: delivered; they are still counted.
    suppressed: int = 0
    pid: int = 0
    #: The primitives of one user call, in order, when there were several
    #: (``subprocess.run`` -> ``subprocess.Popen``, ``subprocess.Popen.communicate``).
    primitives: tuple[str, ...] = ()
    #: Folded stacks sampled during a stall (``outer;...;inner`` -> samples).
    samples: Mapping[str, int] | None = None
    #: CPU seconds the loop thread used during the stall (None where unknown).
    loop_cpu: float | None = None
    #: Ids of the other requests in flight on this loop while it stalled: they waited.
    victims: tuple[str, ...] = ()
    #: The trace span active where it happened (an OpenTelemetry ``SpanContext`` when
    #: the otel sink is in use): the incident's span becomes its child. Not compared,
    #: not printed, not serialized.
    parent: object | None = field(default=None, repr=False, compare=False)
    #: The culprit module's globals: the registry and source loader that
    #: ``warnings.warn_explicit`` wants. Not compared, not printed, not serialized.
    module_globals: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    def headline(self) -> str:
        """Return one line: what blocked, for how long, and where."""
        took = "" if self.duration is None else f" for {self.duration * 1000:.1f} ms"
        what = f"{self.operation}({self.detail})" if self.detail else self.operation
        where = ""
        if self.culprit is not None:
            where = f" at {self.culprit.location()} in {self.culprit.function}"
        return f"{what} blocked the event loop{took}{where}"

    def format(self) -> str:
        """Return a traceback-style text: headline, context, then the stack."""
        lines = [f"loophound: {self.headline()}"]
        context = [f"thread {self.thread_name}"]
        if self.task:
            context.append(f"task {self.task}")
        if self.request:
            method = self.request.get("method", "")
            target = self.request.get("route") or self.request.get("path", "")
            context.append(f"request {method} {target}".rstrip())
        context.append(f"seen by {', '.join(self.detectors)}")
        if self.suppressed:
            context.append(f"{self.suppressed} more like it suppressed by the rate cap")
        lines.append("  (" + "; ".join(context) + ")")
        if self.frames:
            lines.append("Traceback (most recent call last):")
            for frame in self.frames:
                lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.function}')
                source = linecache.getline(frame.filename, frame.lineno).strip()
                if source:
                    lines.append(f"    {source}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the ASGI middleware served, and its thread hops.

    Not an incident: it lets a report say how many requests there were and what
    ``sync_to_async`` cost each of them. Written only for requests that hopped to a
    thread at least once. ``started_at`` is in nanoseconds since the epoch.
    """

    request: Mapping[str, str]
    started_at: int
    duration: float
    #: ``sync_to_async`` calls that ran, seconds waited for the executor's thread,
    #: and seconds run on it.
    hops: int
    hop_wait: float
    hop_run: float
    pid: int = 0

    def format(self) -> str:
        """Return one line: the request and what its thread hops cost."""
        method = self.request.get("method", "")
        target = self.request.get("route") or self.request.get("path", "")
        return (
            f"loophound: request {method} {target} took {self.duration * 1000:.1f} ms; "
            f"{self.hops} thread hop{'s' if self.hops != 1 else ''} waited "
            f"{self.hop_wait * 1000:.1f} ms and ran {self.hop_run * 1000:.1f} ms"
        )


def fingerprint_of(operation: str, culprit: Frame | None, relative_path: str) -> str:
    """Return a digest of operation and culprit that is the same in every process.

    ``relative_path`` is the culprit's file relative to its import root, so two
    checkouts of one project agree. Never ``hash()``: it is salted per process.
    """
    if culprit is None:
        text = f"{operation}\0-"
    else:
        text = f"{operation}\0{relative_path}\0{culprit.lineno}\0{culprit.function}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
