"""asyncio.wait_for times out an asyncio.sleep after 100 ms."""

import asyncio
import contextlib

LABEL = "clean"


async def main(_h):
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.sleep(1), 0.1)
