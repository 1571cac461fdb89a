"""import of modules that are already loaded: a dict lookup, no file access."""

import asyncio

LABEL = "clean"


async def main(_h):
    import json
    import sqlite3  # noqa: F401

    await asyncio.sleep(0)
    assert json.loads("[1]") == [1]
