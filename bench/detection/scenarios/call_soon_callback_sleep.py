"""A callback scheduled with loop.call_soon sleeps 150 ms."""

import asyncio
import time

LABEL = "blocking"


def on_ready(h):
    time.sleep(0.15)  # culprit
    h.end()


async def main(h):
    asyncio.get_running_loop().call_soon(on_ready, h)
    await asyncio.sleep(0.01)
