"""The demo as a Django app, so that its model has a home."""

from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):  # type: ignore[misc]  # Django ships no types
    """The ``loophound.demo`` app, labelled ``demo``."""

    name = "loophound.demo"
    label = "demo"
    default_auto_field = "django.db.models.AutoField"
