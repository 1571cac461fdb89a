"""uvloop: asyncio.sleep and asyncio.to_thread of a blocking sleep."""

import asyncio
import time

import uvloop

LABEL = "clean"


async def main(_h):
    await asyncio.sleep(0.1)
    await asyncio.to_thread(time.sleep, 0.15)


def run(h):
    uvloop.run(h.watch(main(h)))
