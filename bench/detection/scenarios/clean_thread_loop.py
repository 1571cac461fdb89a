"""A loop in a non-main thread: asyncio.sleep and to_thread of a blocking sleep."""

import asyncio
import threading
import time

LABEL = "clean"


async def main(_h):
    await asyncio.sleep(0.1)
    await asyncio.to_thread(time.sleep, 0.15)


def run(h):
    thread = threading.Thread(target=lambda: asyncio.run(h.watch(main(h))), name="worker-loop")
    thread.start()
    thread.join()
