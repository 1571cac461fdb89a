"""os.system('true')."""

import os

LABEL = "blocking"


async def main(h):
    os.system("true")  # culprit  # noqa: ASYNC221
    h.end()
