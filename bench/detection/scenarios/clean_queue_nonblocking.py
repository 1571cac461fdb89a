"""queue.Queue: get_nowait on an empty queue, get() and put() that cannot wait."""

import contextlib
import queue

LABEL = "clean"


def prepare(h):
    h.state["q"] = queue.Queue()


async def main(h):
    q = h.state["q"]
    with contextlib.suppress(queue.Empty):
        q.get_nowait()
    q.put(1)
    assert q.get() == 1
