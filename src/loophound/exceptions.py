"""The exceptions and warning category that loophound raises."""

from __future__ import annotations

__all__ = ["BlockingCallError", "BlockingCallWarning", "ConfigurationError"]


class BlockingCallWarning(UserWarning):
    """A blocking call ran on a thread that was running an asyncio event loop.

    The warning points at the culprit line. Move that work off the loop
    (``await asyncio.to_thread(...)``, ``sync_to_async(...)``, an async library), or,
    if it is deliberate, wrap it in ``loophound.allow_blocking("why")``. Python's own
    ``-W error::loophound.BlockingCallWarning`` makes loophound raise at the call.
    """


class BlockingCallError(RuntimeError):
    """Raised at the call site of a blocking call when loophound runs in ``raise`` mode.

    Move the call off the event loop (``await asyncio.to_thread(func, ...)``) or allow
    it explicitly with ``loophound.allow_blocking("reason")``.
    """


class ConfigurationError(ValueError):
    """A loophound setting has a bad key or value; the message names both and the fix.

    Nothing was installed or patched when this is raised.
    """
