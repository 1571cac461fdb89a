"""``BlockingCallWarning`` at the culprit's file and line, once per fingerprint."""

from __future__ import annotations

import warnings
from typing import Any

from loophound._events import Event
from loophound.exceptions import BlockingCallWarning

__all__ = ["WarningsSink"]


class WarningsSink:
    """Issues one warning per fingerprint through Python's warnings machinery.

    The seen set is reset whenever ``warnings.filters`` changes (pytest opens a new
    ``catch_warnings`` per test), so each test's capture still sees its own repeat.
    """

    name = "warnings"

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._filters_state: tuple[object, int, object] = (None, -1, None)

    def deliver(self, event: Event) -> None:
        """Warn at the culprit line unless this fingerprint already warned."""
        if event.quiet or event.culprit is None:
            return
        # The list itself and its first filter are held, not their ids: a list freed by
        # one catch_warnings block is often reallocated at the same address by the next.
        filters = warnings.filters
        seen_list, seen_len, seen_first = self._filters_state
        first = filters[0] if filters else None
        state = (filters, len(filters), first)
        if filters is not seen_list or len(filters) != seen_len or first is not seen_first:
            self._filters_state = state
            self._seen.clear()
        if event.fingerprint in self._seen:
            return
        self._seen.add(event.fingerprint)
        module_globals: dict[str, Any] | None = None
        registry: dict[Any, Any] | None = None
        module = None
        if isinstance(event.module_globals, dict):
            registry = event.module_globals.setdefault("__warningregistry__", {})
            name = event.module_globals.get("__name__")
            module = name if isinstance(name, str) else None
            spec = event.module_globals.get("__spec__")
            # warn_explicit reads source through the module's loader; a script run as
            # __main__ has no spec, and passing its globals then warns on 3.12+.
            if getattr(spec, "loader", None) is not None:
                module_globals = event.module_globals
        try:
            warnings.warn_explicit(
                BlockingCallWarning(event.headline()),
                BlockingCallWarning,
                event.culprit.filename,
                event.culprit.lineno,
                module=module,
                registry=registry,
                module_globals=module_globals,
            )
        except BlockingCallWarning:
            # The filters say "error": that raised at the call site on the loop thread
            # already; on this thread there is nobody to raise to.
            pass

    def close(self) -> None:
        """Nothing to release."""
