"""A loop running in a non-main thread reads a file."""

import asyncio
import threading

LABEL = "blocking"


def prepare(h):
    h.state["path"] = h.big_file(1 << 20)


async def main(h):
    data = h.state["path"].read_bytes()  # culprit
    h.end()
    assert data


def run(h):
    thread = threading.Thread(target=lambda: asyncio.run(h.watch(main(h))), name="worker-loop")
    thread.start()
    thread.join()
