"""A blocking recv that waits 5 ms for the local server's answer."""

import socket

LABEL = "blocking"


def prepare(h):
    def answer(conn):
        h.wait_go(0.005)
        conn.sendall(b"pong")
        conn.recv(1)

    port = h.serve(answer)
    h.state["sock"] = socket.create_connection(("127.0.0.1", port))


async def main(h):
    h.go()
    data = h.state["sock"].recv(16)  # culprit
    h.end()
    assert data == b"pong"
