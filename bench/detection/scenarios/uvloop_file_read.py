"""Path.read_bytes() on uvloop."""

import uvloop

LABEL = "blocking"


def prepare(h):
    h.state["path"] = h.big_file(1 << 20)


async def main(h):
    data = h.state["path"].read_bytes()  # culprit
    h.end()
    assert data


def run(h):
    uvloop.run(h.watch(main(h)))
