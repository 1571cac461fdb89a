"""socket.getaddrinfo('localhost', 80) on the loop."""

import socket

LABEL = "blocking"


async def main(h):
    infos = socket.getaddrinfo("localhost", 80)  # culprit
    h.end()
    assert infos
