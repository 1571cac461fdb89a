"""Django's database on the loop thread: the cursor as a primitive, and soft mode.

Loaded by name from the guard only when Django is already imported.

- Every ``execute``/``executemany``/``callproc`` of Django's cursor wrapper made on a
  thread that runs an event loop is a blocking call: one incident per query site,
  with the line that ran the query (the ORM call in the view).
- Soft mode (setting ``async_unsafe``): Django raises ``SynchronousOnlyOperation``
  when the ORM is used from async code. With ``report``, loophound sets what
  ``DJANGO_ALLOW_ASYNC_UNSAFE`` sets, so the request goes on, and the queries become
  incidents instead of a 500. Meant for staging: refused when ``DEBUG`` is false,
  unless ``force-report`` says so on purpose. The variable is restored at uninstall.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from django.conf import settings

from loophound.detectors.patch_table import PatchSpec, always
from loophound.exceptions import ConfigurationError

__all__ = ["apply_async_unsafe", "check_async_unsafe", "patch_specs"]

#: Django reads it at every async-unsafe call (django.utils.asyncio.async_unsafe).
ALLOW_ENV = "DJANGO_ALLOW_ASYNC_UNSAFE"
_CURSOR = "django.db.backends.utils.CursorWrapper"
_CURSOR_METHODS = ("execute", "executemany", "callproc")


def patch_specs() -> tuple[PatchSpec, ...]:
    """Return the cursor's methods as patched primitives (none if it cannot be found)."""
    module, _, owner = _CURSOR.rpartition(".")
    try:
        cursor = getattr(importlib.import_module(module), owner)
    except (ImportError, AttributeError):
        return ()
    return tuple(
        PatchSpec(_CURSOR, name, f"django.db.{name}", always)
        for name in _CURSOR_METHODS
        if callable(getattr(cursor, name, None))
    )


def check_async_unsafe(mode: str) -> None:
    """Raise ``ConfigurationError`` when soft mode cannot be used here."""
    if mode == "raise":
        return
    if not settings.configured:
        raise ConfigurationError(
            f"loophound: invalid value for async_unsafe: {mode!r}; it needs Django's "
            "settings configured first (set it in settings.LOOPHOUND or on "
            "LoophoundMiddleware), or use 'raise'."
        )
    if mode == "report" and not settings.DEBUG:
        raise ConfigurationError(
            "loophound: invalid value for async_unsafe: 'report' is refused because "
            "DEBUG is False: soft mode runs ORM queries on the event loop instead of "
            "failing them. Use 'raise' (Django's behaviour), or 'force-report' to do it "
            "anyway on a non-DEBUG staging server."
        )


def apply_async_unsafe(mode: str) -> Callable[[], None] | None:
    """Turn soft mode on; return what turns it off again (``None`` for ``raise``)."""
    check_async_unsafe(mode)
    if mode == "raise":
        return None
    previous = os.environ.get(ALLOW_ENV)
    os.environ[ALLOW_ENV] = "true"

    def restore() -> None:
        if previous is None:
            os.environ.pop(ALLOW_ENV, None)
        else:
            os.environ[ALLOW_ENV] = previous

    return restore
