"""queue.Queue.get(timeout=0.15) on an empty queue."""

import contextlib
import queue

LABEL = "blocking"


def prepare(h):
    h.state["q"] = queue.Queue()


async def main(h):
    with contextlib.suppress(queue.Empty):
        h.state["q"].get(timeout=0.15)  # culprit
    h.end()
