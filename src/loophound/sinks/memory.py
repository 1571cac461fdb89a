"""Keeps events in a list, for ``loophound.capture()`` and tests."""

from __future__ import annotations

from loophound._events import Event

__all__ = ["MemorySink"]


class MemorySink:
    """Appends every event, quiet ones included, to ``events``."""

    name = "memory"

    def __init__(self, events: list[Event] | None = None) -> None:
        self.events: list[Event] = [] if events is None else events

    def deliver(self, event: Event) -> None:
        """Keep the event."""
        self.events.append(event)

    def close(self) -> None:
        """Nothing to release."""
