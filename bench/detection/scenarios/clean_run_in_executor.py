"""time.sleep and a file read in the default executor (loop.run_in_executor)."""

import asyncio
import time

LABEL = "clean"


def prepare(h):
    h.state["path"] = h.big_file(1 << 20)


def work(path):
    time.sleep(0.15)
    return path.read_bytes()


async def main(h):
    data = await asyncio.get_running_loop().run_in_executor(None, work, h.state["path"])
    assert data
