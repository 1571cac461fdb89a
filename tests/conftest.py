"""Shared helpers: run a coroutine on a fresh loop under a capture, find events."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import loophound
from loophound import Event

sys.path.insert(0, os.path.dirname(__file__))


def run_captured(main: Callable[[], Coroutine[Any, Any, Any]], **config: Any) -> list[Event]:
    """Run ``main()`` with ``asyncio.run`` inside ``loophound.capture(**config)``."""
    config.setdefault("sinks", ())
    with loophound.capture(**config) as events:
        asyncio.run(main())
    return list(events)


def line_of(marker: str, path: str) -> int:
    """Return the line number in ``path`` of the line that contains ``marker``."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if marker in line and "line_of(" not in line:
                return number
    raise AssertionError(f"{marker!r} not found in {path}")


def loud(events: list[Event]) -> list[Event]:
    """Return the events that are not quiet (module loads are quiet)."""
    return [e for e in events if not e.quiet]


@pytest.fixture(autouse=True)
def _no_guard_leaks() -> Iterator[None]:
    """Every test starts and ends with no guard installed."""
    assert loophound.active_guard() is None
    yield
    leaked = loophound.active_guard()
    if leaked is not None:
        leaked.uninstall()
        pytest.fail("a test left a loophound guard installed")
