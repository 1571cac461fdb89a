"""threading.Lock and RLock taken on the loop, nobody else holding them."""

import threading

LABEL = "clean"


def prepare(h):
    h.state["lock"] = threading.Lock()
    h.state["rlock"] = threading.RLock()


async def main(h):
    for _ in range(100):
        with h.state["lock"], h.state["rlock"]:
            pass
