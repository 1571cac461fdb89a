"""input() reading a line from a pipe (the child's stdin)."""

LABEL = "blocking"


async def main(h):
    line = input()  # culprit  # noqa: ASYNC250
    h.end()
    assert line
