"""Popen.communicate() with a `cat` child started before."""

import subprocess

LABEL = "blocking"


def prepare(h):
    h.state["proc"] = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


async def main(h):
    out, _ = h.state["proc"].communicate(b"x" * 4096)  # culprit
    h.end()
    assert len(out) == 4096
