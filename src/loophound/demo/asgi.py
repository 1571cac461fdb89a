"""The demo's ASGI application: Django wrapped in loophound's middleware, one line."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application

from loophound.asgi import LoophoundMiddleware
from loophound.demo import telemetry
from loophound.demo.database import prepare

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loophound.demo.settings")

django_application = get_asgi_application()
prepare(settings.DATABASES["default"]["NAME"])

if telemetry.wanted():
    # What a traced service has: the SDK set up, and a server span per request from
    # OpenTelemetry's ASGI middleware, with loophound's inside it.
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    telemetry.configure()
    application: Any = OpenTelemetryMiddleware(LoophoundMiddleware(django_application))
else:
    application = LoophoundMiddleware(django_application)
