"""A pure-Python CPU loop of about 300 ms."""

from _harness import calibrate

LABEL = "blocking"


def work(n):
    return sum(i * i for i in range(n))


def prepare(h):
    h.state["n"] = calibrate(work, 0.3)


async def main(h):
    total = sum(i * i for i in range(h.state["n"]))  # culprit
    h.end()
    assert total
