"""A coroutine calls a plain function of the app that sleeps: the helper's line."""

import time

LABEL = "blocking"


def load_price(h):
    time.sleep(0.15)  # culprit
    h.end()
    return 42


async def view(h):
    return load_price(h)


async def main(h):
    assert await view(h) == 42
