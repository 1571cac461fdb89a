"""A blocking recv: the local server answers 150 ms after the scenario starts."""

import socket

LABEL = "blocking"


def prepare(h):
    def answer_late(conn):
        h.wait_go(0.15)
        conn.sendall(b"pong")
        conn.recv(1)

    port = h.serve(answer_late)
    h.state["sock"] = socket.create_connection(("127.0.0.1", port))


async def main(h):
    h.go()
    data = h.state["sock"].recv(16)  # culprit
    h.end()
    assert data == b"pong"
