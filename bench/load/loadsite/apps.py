"""The project as a Django app, so that its model and template have a home."""

from __future__ import annotations

from django.apps import AppConfig


class LoadsiteConfig(AppConfig):
    name = "loadsite"
    label = "loadsite"
    default_auto_field = "django.db.models.AutoField"
