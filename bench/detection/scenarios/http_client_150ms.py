"""http.client GET to a local server that answers after 150 ms."""

import http.client

LABEL = "blocking"


def prepare(h):
    h.state["port"] = h.http_server(delay=0.15)


async def main(h):
    conn = http.client.HTTPConnection("127.0.0.1", h.state["port"], timeout=5)
    conn.request("GET", "/"); status = conn.getresponse().status  # culprit  # noqa: E702  # fmt: skip
    h.end()
    conn.close()
    assert status == 200
