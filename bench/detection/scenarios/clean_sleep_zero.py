"""time.sleep(0): yields the GIL, never waits."""

# ruff: noqa: ASYNC251
import time

LABEL = "clean"


async def main(_h):
    for _ in range(10):
        time.sleep(0)
