"""logging to a StreamHandler on stderr, 50 records."""

import logging
import sys

LABEL = "clean"


def prepare(h):
    logger = logging.getLogger("scenario")
    logger.addHandler(logging.StreamHandler(sys.stderr))
    logger.propagate = False
    h.state["logger"] = logger


async def main(h):
    for i in range(50):
        h.state["logger"].warning("request %d served", i)
