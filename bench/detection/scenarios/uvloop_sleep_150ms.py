"""time.sleep(0.15) on uvloop."""

# ruff: noqa: ASYNC251
import time

import uvloop

LABEL = "blocking"


async def main(h):
    time.sleep(0.15)  # culprit
    h.end()


def run(h):
    uvloop.run(h.watch(main(h)))
