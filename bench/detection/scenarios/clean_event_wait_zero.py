"""threading.Event.wait(0) on an unset event, wait() on a set one."""

import threading

LABEL = "clean"


def prepare(h):
    h.state["unset"] = threading.Event()
    h.state["set"] = threading.Event()
    h.state["set"].set()


async def main(h):
    assert not h.state["unset"].wait(0)
    assert h.state["set"].wait()
