"""Make the demo's sqlite table before the server starts: no migrations to run.

Uses the sqlite3 driver directly, at import time of the ASGI module, because Django's
connection refuses to run while the server's event loop is already running.
"""

from __future__ import annotations

import sqlite3

ITEMS = ("kettle", "lamp", "chair", "clock", "radio")


def prepare(path: str) -> None:
    """Create the items table and its rows if they are not there yet."""
    with sqlite3.connect(path, timeout=10) as connection:
        connection.execute(
            "create table if not exists loophound_demo_item "
            "(id integer primary key autoincrement, name varchar(40) not null)"
        )
        (count,) = connection.execute("select count(*) from loophound_demo_item").fetchone()
        if count == 0:
            connection.executemany(
                "insert into loophound_demo_item (name) values (?)", [(n,) for n in ITEMS]
            )
    connection.close()
