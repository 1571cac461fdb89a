"""time.sleep(0.005): below the threshold, still a blocking call."""

# ruff: noqa: ASYNC251
import time

LABEL = "blocking"


async def main(h):
    time.sleep(0.005)  # culprit
    h.end()
