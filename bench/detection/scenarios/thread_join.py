"""Thread.join() of a thread that works 150 ms more."""

LABEL = "blocking"


def prepare(h):
    h.state["thread"] = h.thread(lambda: h.wait_go(0.15))


async def main(h):
    h.go()
    h.state["thread"].join()  # culprit
    h.end()
