"""sendall of 32 MiB to a local server that starts reading 150 ms later."""

import socket

LABEL = "blocking"


def prepare(h):
    def read_late(conn):
        h.wait_go(0.15)
        while conn.recv(1 << 20):
            pass

    port = h.serve(read_late)
    h.state["sock"] = socket.create_connection(("127.0.0.1", port))
    h.state["payload"] = b"x" * (32 << 20)


async def main(h):
    h.go()
    h.state["sock"].sendall(h.state["payload"])  # culprit
    h.end()
    h.state["sock"].close()
