"""Settings: sqlite (path from ``LOAD_DB``), no debug, Django's async-capable middleware."""

from __future__ import annotations

import os

SECRET_KEY = "loophound-load-bench-not-secret"  # serves 127.0.0.1 only
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "loadsite.urls"
INSTALLED_APPS = ["loadsite.apps.LoadsiteConfig"]
# Both are sync and async capable: an async view is served without a thread hop.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("LOAD_DB", "loadsite.sqlite3"),
    }
}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,  # with DEBUG off, behind the cached loader
    }
]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING_CONFIG = None
