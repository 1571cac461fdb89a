"""20 ms of pure-Python CPU work: under the 100 ms threshold, not a stall."""

import time

LABEL = "clean"


async def main(_h):
    end = time.perf_counter() + 0.02
    total = 0
    while time.perf_counter() < end:
        total += 1
    assert total
