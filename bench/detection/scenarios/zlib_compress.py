"""zlib.compress at level 9, about 300 ms."""

import os
import zlib

from _harness import calibrate

LABEL = "blocking"


def prepare(h):
    block = os.urandom(1 << 16).hex().encode()
    n = calibrate(lambda data: zlib.compress(data, 9), 0.3, start=1, make=lambda n: block * n)
    h.state["data"] = block * n


async def main(h):
    packed = zlib.compress(h.state["data"], 9)  # culprit
    h.end()
    assert packed
