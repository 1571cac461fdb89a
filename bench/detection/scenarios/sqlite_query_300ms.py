"""A sqlite3 query of about 300 ms on a connection made before."""

import sqlite3

from _harness import calibrate

LABEL = "blocking"
QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT ?) SELECT sum(x) FROM c"
)


def prepare(h):
    conn = sqlite3.connect(h.tmp / "db.sqlite3")
    h.state["conn"] = conn
    h.state["n"] = calibrate(lambda n: conn.execute(QUERY, (n,)).fetchone(), 0.3)


async def main(h):
    total = h.state["conn"].execute(QUERY, (h.state["n"],)).fetchone()  # culprit
    h.end()
    assert total
