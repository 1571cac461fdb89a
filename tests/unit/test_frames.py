"""Walking a stack to its culprit: where the recorder may stop early and the watchdog may not."""

from __future__ import annotations

import asyncio
import os
import sys
from types import FrameType

from loophound._frames import FrameKinds, walk_to_culprit

LIMIT = 256


def frame_inside_asyncio() -> FrameType:
    """Return a live frame whose code sits in asyncio's directory, called from this file."""
    namespace: dict[str, object] = {"sys": sys}
    fake = os.path.join(os.path.dirname(asyncio.__file__), "loophound_test_machinery.py")
    exec(compile("def inner():\n    return sys._getframe()\n", fake, "exec"), namespace)  # noqa: S102
    inner = namespace["inner"]
    assert callable(inner)
    frame: FrameType = inner()
    return frame


def test_the_recorder_walk_stops_at_the_first_machinery_frame() -> None:
    """With stop_at_machinery the walk ends at asyncio's frame, before the user's caller."""
    walk = walk_to_culprit(FrameKinds(), frame_inside_asyncio(), LIMIT, stop_at_machinery=True)
    assert walk.machinery
    assert [code.co_name for code, _ in walk.codes] == ["inner"]
    assert walk.culprit_frame is None


def test_the_full_walk_still_finds_the_user_caller_beyond_machinery() -> None:
    """Without stop_at_machinery (the watchdog's samples) the walk goes on to the user's frame."""
    walk = walk_to_culprit(FrameKinds(), frame_inside_asyncio(), LIMIT)
    assert walk.machinery
    assert walk.culprit_frame is not None
    assert walk.culprit_frame.f_code.co_name == "frame_inside_asyncio"
