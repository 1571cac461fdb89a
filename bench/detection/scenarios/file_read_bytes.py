"""Path.read_bytes() of a 4 MiB file."""

LABEL = "blocking"


def prepare(h):
    h.state["path"] = h.big_file(4 << 20)


async def main(h):
    data = h.state["path"].read_bytes()  # culprit
    h.end()
    assert len(data) == 4 << 20
