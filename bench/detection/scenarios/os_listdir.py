"""os.listdir of a directory of 500 files."""

import os

LABEL = "blocking"


def prepare(h):
    h.state["dir"] = h.files(500, sub="flat") / "d0"


async def main(h):
    names = os.listdir(h.state["dir"])  # culprit
    h.end()
    assert names
