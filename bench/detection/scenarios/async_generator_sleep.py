"""An async generator sleeps 150 ms between two items."""

# ruff: noqa: ASYNC251
import asyncio
import time

LABEL = "blocking"


async def rows(h):
    yield 1
    await asyncio.sleep(0)
    time.sleep(0.15)  # culprit
    h.end()
    yield 2


async def main(h):
    items = [row async for row in rows(h)]
    assert items == [1, 2]
