"""urllib.request.urlopen of a local server."""

import urllib.request

LABEL = "blocking"


def prepare(h):
    h.state["url"] = f"http://127.0.0.1:{h.http_server()}/"


async def main(h):
    body = urllib.request.urlopen(h.state["url"], timeout=5).read()  # culprit  # noqa: ASYNC210
    h.end()
    assert body == b"hello"
