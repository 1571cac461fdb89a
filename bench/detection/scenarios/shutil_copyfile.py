"""shutil.copyfile of a 4 MiB file."""

import shutil

LABEL = "blocking"


def prepare(h):
    h.state["src"] = h.big_file(4 << 20)


async def main(h):
    shutil.copyfile(h.state["src"], h.tmp / "copy.bin")  # culprit
    h.end()
