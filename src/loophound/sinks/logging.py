"""One record per incident on the ``loophound`` logger, with the stack."""

from __future__ import annotations

import logging

from loophound._events import Event, RequestRecord

__all__ = ["LoggingSink"]


class LoggingSink:
    """Logs each incident at WARNING; repeats of a fingerprint at DEBUG.

    The record carries the event as ``record.loophound_event`` for structured handlers.
    """

    name = "logging"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("loophound")
        self._seen: set[str] = set()

    def deliver(self, event: Event) -> None:
        """Log the event's text; quiet events (module loads) are skipped."""
        if event.quiet:
            return
        first = event.fingerprint not in self._seen
        if first:
            if len(self._seen) < 100_000:
                self._seen.add(event.fingerprint)
            level = logging.WARNING
        else:
            level = logging.DEBUG
        self._logger.log(level, "%s", event.format(), extra={"loophound_event": event})

    def wants_requests(self) -> bool:
        """Requests are logged only when the logger is enabled for DEBUG."""
        return self._logger.isEnabledFor(logging.DEBUG)

    def deliver_request(self, record: RequestRecord) -> None:
        """Log a request's thread hops at DEBUG (``record.loophound_request``)."""
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("%s", record.format(), extra={"loophound_request": record})

    def close(self) -> None:
        """Nothing to release."""
