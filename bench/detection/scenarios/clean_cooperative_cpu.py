"""300 ms of CPU work in 3 ms slices, yielding to the loop between slices."""

import asyncio
import time

LABEL = "clean"


async def main(_h):
    end = time.perf_counter() + 0.3
    total = 0
    while time.perf_counter() < end:
        stop = time.perf_counter() + 0.003
        while time.perf_counter() < stop:
            total += 1
        await asyncio.sleep(0)
    assert total
