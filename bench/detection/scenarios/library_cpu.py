"""A library (in a site-packages directory) computes for about 300 ms."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_site" / "site-packages"))
import detlib
from _harness import calibrate

LABEL = "blocking"


def prepare(h):
    h.state["n"] = calibrate(detlib.crunch, 0.3)


async def main(h):
    total = detlib.crunch(h.state["n"])  # culprit
    h.end()
    assert total
