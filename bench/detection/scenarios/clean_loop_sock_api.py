"""loop.sock_connect / sock_sendall / sock_recv on a non-blocking socket."""

import asyncio
import socket

LABEL = "clean"


def prepare(h):
    def answer(conn):
        conn.sendall(conn.recv(16))

    h.state["port"] = h.serve(answer)


async def main(h):
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)  # noqa: FBT003
    await loop.sock_connect(sock, ("127.0.0.1", h.state["port"]))
    await loop.sock_sendall(sock, b"ping")
    assert await loop.sock_recv(sock, 16) == b"ping"
    sock.close()
