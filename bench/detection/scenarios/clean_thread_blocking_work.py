"""A plain thread sleeps, reads files and runs a process while the loop awaits."""

import asyncio
import subprocess
import threading
import time

LABEL = "clean"


def prepare(h):
    h.state["path"] = h.big_file(1 << 20)


def work(path):
    time.sleep(0.1)
    path.read_bytes()
    subprocess.run(["true"], check=True)


async def main(h):
    thread = threading.Thread(target=work, args=(h.state["path"],))
    thread.start()
    await asyncio.sleep(0.2)
    await asyncio.to_thread(thread.join)
