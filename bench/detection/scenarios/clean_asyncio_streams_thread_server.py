"""asyncio streams to a local threaded server that answers after 150 ms."""

import asyncio

LABEL = "clean"


def prepare(h):
    def answer(conn):
        conn.recv(16)
        h.wait_go(0.15)
        conn.sendall(b"pong\n")

    h.state["port"] = h.serve(answer)


async def main(h):
    reader, writer = await asyncio.open_connection("127.0.0.1", h.state["port"])
    h.go()
    writer.write(b"ping\n")
    await writer.drain()
    assert await reader.readline() == b"pong\n"
    writer.close()
    await writer.wait_closed()
