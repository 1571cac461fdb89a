"""loophound: find the code that blocks your asyncio event loop.

>>> import loophound
>>> guard = loophound.install(threshold=0.1)   # doctest: +SKIP
"""

from __future__ import annotations

from loophound._context import allow_blocking
from loophound._events import Event, Frame
from loophound._guard import Guard, active_guard, capture, guard, install
from loophound._version import __version__
from loophound.exceptions import BlockingCallError, BlockingCallWarning, ConfigurationError

__all__ = [
    "BlockingCallError",
    "BlockingCallWarning",
    "ConfigurationError",
    "Event",
    "Frame",
    "Guard",
    "__version__",
    "active_guard",
    "allow_blocking",
    "capture",
    "guard",
    "install",
]
