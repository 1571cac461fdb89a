"""threading.Semaphore(1) held by another thread for 150 ms."""

import threading

LABEL = "blocking"


def prepare(h):
    sem = threading.Semaphore(1)
    held = threading.Event()
    h.state["sem"] = sem

    def hold():
        with sem:
            held.set()
            h.wait_go(0.15)

    h.thread(hold)
    held.wait()


async def main(h):
    sem = h.state["sem"]
    h.go()
    sem.acquire()  # culprit
    h.end()
    sem.release()
