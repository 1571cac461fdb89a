"""recv on a non-blocking socket with nothing to read: BlockingIOError at once."""

import contextlib
import socket

LABEL = "clean"


def prepare(h):
    port = h.serve(lambda conn: conn.recv(1))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)  # noqa: FBT003
    h.state["sock"] = sock


async def main(h):
    with contextlib.suppress(BlockingIOError):
        h.state["sock"].recv(16)
