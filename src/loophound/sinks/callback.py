"""Calls the user's ``on_event`` on the dispatcher thread, never on the loop."""

from __future__ import annotations

from collections.abc import Callable

from loophound._events import Event

__all__ = ["CallbackSink"]


class CallbackSink:
    """Calls ``callback(event)`` for every event; a raising callback is disabled."""

    name = "callback"

    def __init__(self, callback: Callable[[Event], object]) -> None:
        self._callback = callback

    def deliver(self, event: Event) -> None:
        """Call the user's callback."""
        self._callback(event)

    def close(self) -> None:
        """Nothing to release."""
