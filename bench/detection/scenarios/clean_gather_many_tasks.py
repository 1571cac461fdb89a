"""asyncio.gather of 500 tasks that each sleep a little."""

import asyncio

LABEL = "clean"


async def one(i):
    await asyncio.sleep(0.001 * (i % 50))
    return i


async def main(_h):
    results = await asyncio.gather(*(one(i) for i in range(500)))
    assert len(results) == 500
