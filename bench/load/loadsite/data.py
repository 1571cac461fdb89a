"""The table and its rows, without Django: the runner makes the database from them."""

from __future__ import annotations

TABLE = "loadsite_item"
ITEMS = ("kettle", "lamp", "chair", "clock", "radio")
