"""asyncio streams: an asyncio server and a client on 127.0.0.1 in the same loop."""

import asyncio

LABEL = "clean"


async def echo(reader, writer):
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()


async def main(_h):
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    await writer.drain()
    assert await reader.readline() == b"ping\n"
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
