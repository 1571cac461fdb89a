"""A blocking socket.connect to a local listener."""

import socket

LABEL = "blocking"


def prepare(h):
    h.state["port"] = h.serve(lambda conn: conn.recv(1))
    h.state["sock"] = socket.socket()


async def main(h):
    sock = h.state["sock"]
    sock.connect(("127.0.0.1", h.state["port"]))  # culprit
    h.end()
    sock.close()
