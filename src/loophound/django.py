"""The Django adapter: ``settings.LOOPHOUND`` and route templates for requests.

Loaded by name from ``loophound.asgi`` only when Django is already imported, so that
neither the core nor the middleware imports Django.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.urls import Resolver404, resolve

from loophound.exceptions import ConfigurationError

__all__ = ["loophound_settings", "route_resolver"]

#: Distinct paths whose route is remembered (paths with ids are many; routes are few).
_ROUTE_CACHE = 4096


def loophound_settings() -> Mapping[str, Any] | None:
    """Return ``settings.LOOPHOUND`` (a dict) when Django's settings are configured."""
    if not settings.configured:
        return None
    value = getattr(settings, "LOOPHOUND", None)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"loophound: invalid value for settings.LOOPHOUND: {value!r}; expected a dict of "
            "loophound settings, e.g. LOOPHOUND = {'threshold': 0.1}."
        )
    return value


def route_resolver() -> Callable[[str], str | None] | None:
    """Return ``path -> route template`` (``items/<int:pk>/``) for the root URLconf."""
    if not settings.configured or not getattr(settings, "ROOT_URLCONF", None):
        return None

    @functools.lru_cache(maxsize=_ROUTE_CACHE)
    def route_for(path: str) -> str | None:
        try:
            match = resolve(path)
        except Resolver404:
            return None
        route = match.route
        return route if isinstance(route, str) and route else None

    return route_for
