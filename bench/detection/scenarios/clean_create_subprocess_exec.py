"""asyncio.create_subprocess_exec and await proc.communicate()."""

import asyncio

LABEL = "clean"


async def main(_h):
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "sleep 0.1; echo done", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert out == b"done\n"
