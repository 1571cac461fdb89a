"""Settings of the demo project: no database server, no secrets worth keeping."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "loophound-demo-not-secret"  # noqa: S105 - a demo that serves 127.0.0.1 only
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "loophound.demo.urls"
INSTALLED_APPS = ["loophound.demo.apps.DemoConfig"]
MIDDLEWARE: list[str] = []
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), "loophound-demo.sqlite3"),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Soft mode: the sync ORM call in /blocking/orm/ becomes an incident instead of a 500.
# A staging-like demo runs with DEBUG off, so it says "force" on purpose.
LOOPHOUND = {"threshold": 0.1, "async_unsafe": "force-report"}
