"""threading.Lock held by another thread for 150 ms."""

import threading

LABEL = "blocking"


def prepare(h):
    lock = threading.Lock()
    held = threading.Event()
    h.state["lock"] = lock

    def hold():
        with lock:
            held.set()
            h.wait_go(0.15)

    h.thread(hold)
    held.wait()


async def main(h):
    lock = h.state["lock"]
    h.go()
    lock.acquire()  # culprit
    h.end()
    lock.release()
