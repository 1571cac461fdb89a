"""sha256 of a large buffer, about 300 ms."""

import hashlib

from _harness import calibrate

LABEL = "blocking"


def prepare(h):
    chunk = b"x" * (1 << 20)
    n = calibrate(
        lambda data: hashlib.sha256(data).digest(), 0.3, start=8, make=lambda n: chunk * n
    )
    h.state["data"] = chunk * n


async def main(h):
    digest = hashlib.sha256(h.state["data"]).hexdigest()  # culprit
    h.end()
    assert digest
