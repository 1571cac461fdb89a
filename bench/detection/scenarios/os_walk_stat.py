"""A stat-heavy walk: os.walk over 1000 files and os.stat of each."""

import os

LABEL = "blocking"


def prepare(h):
    h.state["root"] = h.files(1000)


async def main(h):
    root = h.state["root"]
    total = sum(os.stat(os.path.join(r, f)).st_size for r, _, fs in os.walk(root) for f in fs)  # culprit  # noqa: E501  # fmt: skip
    h.end()
    assert total
