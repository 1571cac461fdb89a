"""The demo's ASGI application: Django wrapped in loophound's middleware, one line."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from loophound.asgi import LoophoundMiddleware
from loophound.demo.database import prepare

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loophound.demo.settings")

django_application = get_asgi_application()
prepare(settings.DATABASES["default"]["NAME"])

application = LoophoundMiddleware(django_application)
