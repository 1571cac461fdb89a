"""threading.Event.wait(0.005): below the threshold."""

import threading

LABEL = "blocking"


def prepare(h):
    h.state["event"] = threading.Event()


async def main(h):
    h.state["event"].wait(0.005)  # culprit
    h.end()
