"""The demo's ASGI application: Django wrapped in loophound's middleware, one line."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from loophound.asgi import LoophoundMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loophound.demo.settings")

application = LoophoundMiddleware(get_asgi_application())
