"""select.select on a silent pipe with a 150 ms timeout."""

import os
import select

LABEL = "blocking"


def prepare(h):
    h.state["r"], h.state["w"] = os.pipe()


async def main(h):
    select.select([h.state["r"]], [], [], 0.15)  # culprit
    h.end()
