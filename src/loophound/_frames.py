"""Which frames are the user's: the culprit, the machinery, the import roots.

Runs on the loop thread when an incident happens, so it classifies a file once and
caches the answer; it never reads source or formats anything.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import concurrent.futures
import os
import site
import sys
import sysconfig
import threading
from collections.abc import Iterable
from types import CodeType, FrameType

__all__ = ["THREAD_START_CODE", "FrameKinds", "Walk", "relative_to_import_root"]

USER = 0
LIBRARY = 1  # site-packages: third-party code the user calls
STDLIB = 2
MACHINERY = 3  # asyncio and concurrent.futures: work they do on the user's behalf
LOOPHOUND = 4

_LOOPHOUND_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: The bundled demo project is user code: its views are the culprits it shows.
_DEMO_DIR = _LOOPHOUND_DIR + "demo" + os.sep
_IMPORT_FIND_AND_LOAD = "_find_and_load"
_FROZEN_BOOTSTRAP = "<frozen importlib._bootstrap>"


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path)).rstrip(os.sep) + os.sep


def _site_dirs() -> list[str]:
    dirs = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - some embedded interpreters lack it
        pass
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if isinstance(user_site, str):
        dirs.add(user_site)
    return sorted({_norm(d) for d in dirs if d}, key=len, reverse=True)


def _stdlib_dirs() -> list[str]:
    dirs = {sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}
    dirs.add(os.path.dirname(os.__file__))
    return sorted({_norm(d) for d in dirs if d}, key=len, reverse=True)


_MACHINERY_DIRS = (
    _norm(os.path.dirname(asyncio.__file__)),
    _norm(os.path.dirname(concurrent.futures.__file__)),
)
#: ``Thread.start`` waits a few microseconds for the new thread: never an incident.
THREAD_START_CODE = threading.Thread.start.__code__
_MACHINERY_CODES = frozenset({THREAD_START_CODE})
#: Where the loop runs a callback or steps a task. The frames beyond it started the
#: loop (``asyncio.run``'s caller): never the culprit, and never an anchor, or every
#: blocking call of every library task would merge into one incident at that line.
_LOOP_DISPATCH = frozenset(
    {
        asyncio.events.Handle._run.__code__,
        # Reached without passing a callback: the loop is between steps (a sample
        # taken while it polls), so nothing beyond it is to blame.
        asyncio.base_events.BaseEventLoop._run_once.__code__,  # type: ignore[attr-defined]
    }
)


class FrameKinds:
    """Classifies code objects as user, library, stdlib, machinery or loophound."""

    def __init__(
        self,
        code_roots: Iterable[str] = (),
        include_modules: Iterable[str] = (),
        exclude_modules: Iterable[str] = (),
    ) -> None:
        self._code_roots = tuple(_norm(p) for p in code_roots)
        self._include = tuple(include_modules)
        self._exclude = tuple(exclude_modules)
        self._site = tuple(_site_dirs())
        self._stdlib = tuple(_stdlib_dirs())
        self._by_file: dict[str, int] = {}
        self._module_by_file: dict[str, str] = {}

    def module_of(self, frame: FrameType) -> str:
        """Return the module name of a frame's code (cached per file)."""
        filename = frame.f_code.co_filename
        name = self._module_by_file.get(filename)
        if name is None:
            found = frame.f_globals.get("__name__")
            name = found if isinstance(found, str) else ""
            self._module_by_file[filename] = name
        return name

    def kind(self, frame: FrameType) -> int:
        """Return the kind of a frame's code; the first look per file is cached."""
        code = frame.f_code
        kind = self._by_file.get(code.co_filename)
        if kind is None:
            kind = self._classify(code.co_filename, self.module_of(frame))
            self._by_file[code.co_filename] = kind
        if kind == STDLIB and code in _MACHINERY_CODES:
            return MACHINERY
        return kind

    def _matches(self, module: str, prefixes: tuple[str, ...]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    def _classify(self, filename: str, module: str) -> int:
        if filename.startswith("<"):
            # <frozen importlib._bootstrap> is the stdlib; <string>, <stdin> are user code.
            return STDLIB if filename.startswith("<frozen ") else USER
        path = _norm(filename)
        if (
            path.startswith(_LOOPHOUND_DIR)
            and not path.startswith(_DEMO_DIR)
            and not self._matches(module, self._include)
        ):
            return LOOPHOUND
        if self._matches(module, self._include) or any(
            path.startswith(root) for root in self._code_roots
        ):
            return USER
        if self._matches(module, self._exclude):
            return LIBRARY
        if any(path.startswith(d) for d in self._site) or (
            f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path
        ):
            return LIBRARY
        if any(path.startswith(d) for d in _MACHINERY_DIRS):
            return MACHINERY
        if any(path.startswith(d) for d in self._stdlib):
            return STDLIB
        return USER


class Walk:
    """The result of walking a stack outwards from a primitive to its culprit.

    ``codes`` holds ``(code, lineno)`` pairs innermost first; ``culprit`` is an index
    into it (or -1). ``machinery`` is true when asyncio or concurrent.futures stand
    between the primitive and the first non-stdlib frame. ``anchor`` is the frame the
    culprit called into (one user call = one anchor); ``import_name`` is set when the
    primitive is part of a module load.
    """

    __slots__ = ("anchor", "codes", "culprit", "culprit_frame", "import_name", "machinery")

    def __init__(self) -> None:
        self.codes: list[tuple[CodeType, int]] = []
        self.culprit = -1
        self.culprit_frame: FrameType | None = None
        self.anchor: FrameType | None = None
        self.machinery = False
        self.import_name: str | None = None


def walk_to_culprit(
    kinds: FrameKinds, frame: FrameType | None, limit: int, *, stop_at_machinery: bool = False
) -> Walk:
    """Walk outwards from ``frame`` until the culprit, recording raw frames only.

    The culprit is the innermost user frame; with none, the innermost library frame;
    with neither, the innermost frame that is not loophound's. ``stop_at_machinery``
    ends the walk as soon as ``machinery`` is known to be true: the recorder drops
    those calls (``Thread.start`` on every request of Django), so the rest of the
    stack is not worth reading.
    """
    walk = Walk()
    codes = walk.codes
    in_stdlib_chain = True
    fallback = -1
    fallback_frame: FrameType | None = None
    last_find_and_load: FrameType | None = None
    previous: FrameType | None = None
    depth = 0
    while frame is not None and depth < limit:
        kind = kinds.kind(frame)
        code = frame.f_code
        if kind == USER:
            codes.append((code, frame.f_lineno))
            walk.culprit = len(codes) - 1
            walk.culprit_frame = frame
            walk.anchor = previous
            break
        if kind == LOOPHOUND:
            frame = frame.f_back
            depth += 1
            continue
        codes.append((code, frame.f_lineno))
        if kind == MACHINERY:
            if in_stdlib_chain:
                walk.machinery = True
                if stop_at_machinery:
                    return walk
            if code in _LOOP_DISPATCH:
                break
        elif kind == LIBRARY:
            in_stdlib_chain = False
            if fallback < 0:
                fallback = len(codes) - 1
                fallback_frame = frame
        elif code.co_name == _IMPORT_FIND_AND_LOAD and code.co_filename == _FROZEN_BOOTSTRAP:
            last_find_and_load = frame
        previous = frame
        frame = frame.f_back
        depth += 1
    if walk.culprit < 0:
        if fallback >= 0:
            walk.culprit, walk.culprit_frame = fallback, fallback_frame
            del codes[fallback + 1 :]  # extend() records the frames beyond the culprit
        elif codes:
            walk.culprit = 0
    if last_find_and_load is not None:
        name = last_find_and_load.f_locals.get("name")
        walk.import_name = name if isinstance(name, str) else "?"
        walk.anchor = last_find_and_load
    return walk


def extend(walk: Walk, limit: int) -> None:
    """Record the frames beyond the culprit, up to ``limit`` frames in all."""
    frame = walk.culprit_frame.f_back if walk.culprit_frame is not None else None
    codes = walk.codes
    while frame is not None and len(codes) < limit:
        codes.append((frame.f_code, frame.f_lineno))
        frame = frame.f_back


def relative_to_import_root(filename: str) -> str:
    """Return ``filename`` relative to the ``sys.path`` entry that holds it.

    That is the part two checkouts or two hosts share, so fingerprints agree.
    """
    if filename.startswith("<"):
        return filename
    path = os.path.abspath(filename)
    best = ""
    for entry in sys.path:
        root = os.path.abspath(entry or os.curdir) + os.sep
        if path.startswith(root) and len(root) > len(best):
            best = root
    return path[len(best) :] if best else os.path.basename(path)
