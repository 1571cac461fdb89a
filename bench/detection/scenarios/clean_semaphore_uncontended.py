"""threading.Semaphore acquired and released, nobody else holding it."""

import threading

LABEL = "clean"


def prepare(h):
    h.state["sem"] = threading.Semaphore(2)


async def main(h):
    for _ in range(100):
        with h.state["sem"]:
            pass
