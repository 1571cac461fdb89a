"""Path.write_text() of 2 MiB."""

LABEL = "blocking"


def prepare(h):
    h.state["path"] = h.tmp / "out.txt"
    h.state["text"] = "line of text\n" * 160_000


async def main(h):
    h.state["path"].write_text(h.state["text"], encoding="utf-8")  # culprit
    h.end()
