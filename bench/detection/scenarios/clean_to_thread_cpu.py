"""300 ms of pure-Python CPU work in asyncio.to_thread (the loop only waits)."""

import asyncio
import time

LABEL = "clean"


def spin(seconds):
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        total += 1
    return total


async def main(_h):
    assert await asyncio.to_thread(spin, 0.3)
