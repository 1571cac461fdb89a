"""1000 light callbacks through call_soon and call_later."""

import asyncio

LABEL = "clean"


async def main(_h):
    loop = asyncio.get_running_loop()
    seen = []
    for i in range(500):
        loop.call_soon(seen.append, i)
        loop.call_later(0.001 * (i % 20), seen.append, i)
    await asyncio.sleep(0.05)
    assert len(seen) == 1000
