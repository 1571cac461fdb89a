"""Replacing a method of a built-in (C) type, for objects made before install.

A lock or a ``sqlite3`` connection made before ``install`` (a module-level lock, a
connection opened at start-up) is an instance of a C type whose methods ``setattr``
cannot replace: the type is immutable. On CPython its attribute dict can still be
written through the ``mappingproxy`` that ``__dict__`` returns (its one referent);
``PyType_Modified`` then drops the type's attribute cache and the version tag that
the specialising interpreter keys its lookups on, so the next lookup sees the new
entry. ``ctypes.pythonapi`` calls hold the GIL, so no thread looks the type up half
way through.

Only heap types are written (the ones an extension module creates at import, such
as ``_thread.lock`` and ``sqlite3.Cursor`` since Python 3.10): static types are
shared by every interpreter in the process. Free-threaded builds and other
interpreters get ``supported() == False`` and the patch table skips these entries.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

__all__ = ["set_own", "supported"]

_HEAPTYPE = 1 << 9
_type_modified: Any = None
_checked = False


def _load() -> Any:
    """Return ``PyType_Modified`` as a ctypes function, or ``None`` where unusable."""
    global _type_modified, _checked
    if _checked:
        return _type_modified
    _checked = True
    if sys.implementation.name != "cpython":
        return None
    gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if gil_enabled is not None and not gil_enabled():
        return None  # a free-threaded build: another thread may read the dict meanwhile
    try:
        # Here, not at the top: a build without ctypes only loses this feature.
        import ctypes  # noqa: PLC0415

        function = ctypes.pythonapi.PyType_Modified
    except (ImportError, AttributeError, OSError):
        return None
    function.argtypes = [ctypes.py_object]
    function.restype = None
    _type_modified = function
    return function


def supported() -> bool:
    """True when built-in types' methods can be replaced in this interpreter."""
    return _load() is not None


def _own_dict(cls: type) -> dict[str, Any]:
    if not isinstance(cls, type) or not cls.__flags__ & _HEAPTYPE:
        raise TypeError(f"loophound: {cls!r} is not a heap type; its methods stay as they are")
    referents = gc.get_referents(cls.__dict__)
    if len(referents) != 1 or type(referents[0]) is not dict:
        raise TypeError(f"loophound: cannot reach the attribute dict of {cls!r}")
    own: dict[str, Any] = referents[0]
    return own


def set_own(cls: type, name: str, value: object) -> None:
    """Put ``value`` in ``cls``'s own dict under ``name`` (``TypeError`` if unsupported).

    The entry must exist already: only existing methods are replaced, so nothing that
    ``dir()`` or a subclass sees appears or disappears.
    """
    type_modified = _load()
    if type_modified is None:
        raise TypeError(f"loophound: built-in types cannot be patched in {sys.version!r}")
    own = _own_dict(cls)
    if name not in own:
        raise TypeError(f"loophound: {cls.__qualname__} has no own attribute {name!r}")
    own[name] = value
    type_modified(cls)
