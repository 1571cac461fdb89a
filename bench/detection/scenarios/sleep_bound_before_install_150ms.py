"""``from time import sleep`` bound before the tool is installed; sleep(0.15)."""

from time import sleep

LABEL = "blocking"


async def main(h):
    sleep(0.15)  # culprit  # noqa: ASYNC251
    h.end()
