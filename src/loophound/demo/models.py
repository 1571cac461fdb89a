"""The demo's one model: rows to query with the async ORM and, wrongly, the sync one."""

from __future__ import annotations

from django.db import models


class Item(models.Model):  # type: ignore[misc]  # Django ships no types
    """A named item; the table is made by ``loophound.demo.database``."""

    name = models.CharField(max_length=40)

    class Meta:
        app_label = "demo"
        db_table = "loophound_demo_item"

    def __str__(self) -> str:
        return str(self.name)
