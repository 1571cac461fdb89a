"""json.loads of a large document (about 300 ms, in C holding the GIL)."""

import json

from _harness import calibrate

LABEL = "blocking"


def document(n):
    return json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(n)])


def prepare(h):
    n = calibrate(json.loads, 0.3, make=document)
    h.state["doc"] = document(n)


async def main(h):
    # Kept: freeing millions of objects at the end of the step would be a stall too.
    h.state["data"] = json.loads(h.state["doc"])  # culprit
    h.end()
