"""threading.Event.wait(0.15) on an event nobody sets."""

import threading

LABEL = "blocking"


def prepare(h):
    h.state["event"] = threading.Event()


async def main(h):
    h.state["event"].wait(0.15)  # culprit
    h.end()
