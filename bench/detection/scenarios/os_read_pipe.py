"""os.read on a blocking pipe that a helper thread writes 150 ms later."""

import os

LABEL = "blocking"


def prepare(h):
    r, w = os.pipe()
    h.state["r"] = r

    def write_late():
        h.wait_go(0.15)
        os.write(w, b"x")

    h.thread(write_late)


async def main(h):
    h.go()
    data = os.read(h.state["r"], 1)  # culprit
    h.end()
    assert data == b"x"
