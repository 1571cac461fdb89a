"""loop.getaddrinfo('localhost', 80): resolved in the executor."""

import asyncio

LABEL = "clean"


async def main(_h):
    infos = await asyncio.get_running_loop().getaddrinfo("localhost", 80)
    assert infos
