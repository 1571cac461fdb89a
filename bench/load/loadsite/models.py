"""One model with a few rows: the async ORM view counts and iterates them."""

from __future__ import annotations

from django.db import models

from loadsite.data import ITEMS, TABLE

__all__ = ["ITEMS", "TABLE", "Item"]


class Item(models.Model):
    name = models.CharField(max_length=40)

    class Meta:
        app_label = "loadsite"
        db_table = TABLE

    def __str__(self) -> str:
        return str(self.name)
