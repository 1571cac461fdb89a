"""time.sleep(0.005) on uvloop: below the threshold."""

# ruff: noqa: ASYNC251
import time

import uvloop

LABEL = "blocking"


async def main(h):
    time.sleep(0.005)  # culprit
    h.end()


def run(h):
    uvloop.run(h.watch(main(h)))
