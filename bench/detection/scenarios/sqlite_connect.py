"""sqlite3.connect to a database file."""

import sqlite3

LABEL = "blocking"


def prepare(h):
    h.state["path"] = h.tmp / "db.sqlite3"


async def main(h):
    conn = sqlite3.connect(h.state["path"])  # culprit
    h.end()
    conn.close()
