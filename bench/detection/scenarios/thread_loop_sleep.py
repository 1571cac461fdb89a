"""A loop running in a non-main thread sleeps 150 ms."""

# ruff: noqa: ASYNC251
import asyncio
import threading
import time

LABEL = "blocking"


async def main(h):
    time.sleep(0.15)  # culprit
    h.end()


def run(h):
    thread = threading.Thread(target=lambda: asyncio.run(h.watch(main(h))), name="worker-loop")
    thread.start()
    thread.join()
