"""time.sleep(0.15) in a coroutine."""

# ruff: noqa: ASYNC251
import time

LABEL = "blocking"


async def main(h):
    time.sleep(0.15)  # culprit
    h.end()
