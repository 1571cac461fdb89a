"""A backtracking regex, about 300 ms in C holding the GIL."""

import re
import time

LABEL = "blocking"
PATTERN = re.compile(r"(a+)+$")


def prepare(h):
    n = 16
    while True:
        text = "a" * n + "b"
        began = time.perf_counter()
        PATTERN.match(text)
        if time.perf_counter() - began >= 0.3:
            h.state["text"] = text
            return
        n += 1


async def main(h):
    found = PATTERN.match(h.state["text"])  # culprit
    h.end()
    assert found is None
