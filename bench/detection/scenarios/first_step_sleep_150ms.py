"""time.sleep(0.15) in the loop's first step (a test's coroutine, a fresh worker loop)."""

# ruff: noqa: ASYNC251
import asyncio
import time

LABEL = "blocking"


async def main(h):
    time.sleep(0.15)  # culprit
    h.end()


def run(h):
    asyncio.run(h.watch(main(h), warmup=0))
