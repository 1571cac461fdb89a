"""A task started by create_task sleeps 150 ms."""

# ruff: noqa: ASYNC251
import asyncio
import time

LABEL = "blocking"


async def refresh(h):
    await asyncio.sleep(0.01)
    time.sleep(0.15)  # culprit
    h.end()


async def main(h):
    task = asyncio.create_task(refresh(h))
    await task
