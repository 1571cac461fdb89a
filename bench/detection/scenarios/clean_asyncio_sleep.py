"""await asyncio.sleep(0.15)."""

import asyncio

LABEL = "clean"


async def main(_h):
    await asyncio.sleep(0.15)
