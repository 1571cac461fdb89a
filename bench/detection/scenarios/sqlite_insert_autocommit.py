"""One sqlite3 INSERT in autocommit mode: a write to the database file."""

import sqlite3

LABEL = "blocking"


def prepare(h):
    conn = sqlite3.connect(h.tmp / "db.sqlite3", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    h.state["conn"] = conn


async def main(h):
    h.state["conn"].execute("INSERT INTO t VALUES (?)", (1,))  # culprit
    h.end()
