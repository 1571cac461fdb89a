"""A callback scheduled with loop.call_later computes for about 300 ms."""

import asyncio

from _harness import calibrate

LABEL = "blocking"


def work(n):
    return sum(i * i for i in range(n))


def on_timer(h):
    total = sum(i * i for i in range(h.state["n"]))  # culprit
    h.end()
    assert total


def prepare(h):
    h.state["n"] = calibrate(work, 0.3)


async def main(h):
    asyncio.get_running_loop().call_later(0.01, on_timer, h)
    await asyncio.sleep(0.05)
