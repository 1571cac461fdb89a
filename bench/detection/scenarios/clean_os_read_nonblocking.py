"""os.read on a non-blocking pipe with nothing in it: BlockingIOError at once."""

import contextlib
import os

LABEL = "clean"


def prepare(h):
    r, _w = os.pipe()
    os.set_blocking(r, False)
    h.state["r"] = r
    h.state["w"] = _w


async def main(h):
    with contextlib.suppress(BlockingIOError):
        os.read(h.state["r"], 1)
