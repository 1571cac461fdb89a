"""glob.glob('**/*.txt', recursive=True) over 1000 files."""

import glob

LABEL = "blocking"


def prepare(h):
    h.state["pattern"] = str(h.files(1000) / "**" / "*.txt")


async def main(h):
    found = glob.glob(h.state["pattern"], recursive=True)  # culprit
    h.end()
    assert len(found) == 1000
