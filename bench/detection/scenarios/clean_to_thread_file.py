"""aiofiles-style offloading: open, read, write and listdir in asyncio.to_thread."""

import asyncio
import os

LABEL = "clean"


def prepare(h):
    h.state["path"] = h.big_file(1 << 20)


async def main(h):
    data = await asyncio.to_thread(h.state["path"].read_bytes)
    await asyncio.to_thread((h.tmp / "copy.bin").write_bytes, data)
    names = await asyncio.to_thread(os.listdir, h.tmp)
    assert names
