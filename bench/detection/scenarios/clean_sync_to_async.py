"""asgiref's sync_to_async runs blocking work (sleep, sqlite) in its thread."""

import sqlite3
import time

from asgiref.sync import sync_to_async

LABEL = "clean"


def prepare(h):
    h.state["path"] = h.tmp / "db.sqlite3"


def query(path):
    time.sleep(0.15)
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT 1").fetchone()
    finally:
        conn.close()


async def main(h):
    row = await sync_to_async(query)(h.state["path"])
    assert row == (1,)
