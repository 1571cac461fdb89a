"""os.scandir with a stat per entry."""

import os

LABEL = "blocking"


def prepare(h):
    h.state["dir"] = h.files(500) / "d1"


async def main(h):
    sizes = [e.stat().st_size for e in os.scandir(h.state["dir"])]  # culprit
    h.end()
    assert sizes
