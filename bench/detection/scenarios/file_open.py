"""open() of a local file on the loop."""

LABEL = "blocking"


def prepare(h):
    h.state["path"] = h.big_file(1024)


async def main(h):
    fh = open(h.state["path"], "rb")  # culprit  # noqa: ASYNC230, SIM115
    h.end()
    fh.close()
