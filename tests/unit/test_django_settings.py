"""settings.LOOPHOUND: read when Django is configured, between kwargs and environment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("django")

SCRIPT = textwrap.dedent(
    """
    import sys
    import django
    from django.conf import settings

    settings.configure(LOOPHOUND={LOOPHOUND}, ROOT_URLCONF=__name__)
    urlpatterns = []
    django.setup()

    import loophound
    from loophound.asgi import LoophoundMiddleware

    async def app(scope, receive, send):
        pass

    try:
        middleware = LoophoundMiddleware(app, **{KWARGS})
    except loophound.ConfigurationError as exc:
        print("ERROR", exc)
        sys.exit(0)
    config = middleware.config
    print(config.threshold, config.max_frames, config.rate_limit)
    """
)


def run(loophound_setting: str, kwargs: str, env: dict[str, str]) -> str:
    """Build a middleware in a fresh process configured so; return what it printed."""
    code = SCRIPT.replace("{LOOPHOUND}", loophound_setting).replace("{KWARGS}", kwargs)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOPHOUND_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_kwargs_win_over_settings_which_win_over_the_environment() -> None:
    """A key set in all three places takes the kwarg; settings beat LOOPHOUND_* variables."""
    out = run(
        "{'threshold': 0.5, 'max_frames': 10}",
        "{'max_frames': 30}",
        {"LOOPHOUND_MAX_FRAMES": "20", "LOOPHOUND_THRESHOLD": "0.9", "LOOPHOUND_RATE_LIMIT": "5"},
    )
    assert out == "0.5 30 5"


def test_a_bad_value_in_settings_names_the_settings_key() -> None:
    """A bad settings.LOOPHOUND value is an error naming settings.LOOPHOUND, key and value."""
    out = run("{'threshold': 'fast'}", "{}", {})
    assert out.startswith("ERROR")
    assert "threshold (from settings.LOOPHOUND)" in out
    assert "'fast'" in out


def test_an_unknown_key_in_settings_is_an_error() -> None:
    """An unknown key in settings.LOOPHOUND is refused with the valid keys listed."""
    out = run("{'treshold': 0.2}", "{}", {})
    assert "unknown setting treshold (from settings.LOOPHOUND)" in out
    assert "threshold" in out.split("valid settings are", 1)[1]


def test_settings_loophound_must_be_a_dict() -> None:
    """settings.LOOPHOUND that is not a dict is refused with the expected form."""
    out = run("['threshold']", "{}", {})
    assert out.startswith("ERROR")
    assert "settings.LOOPHOUND" in out
    assert "dict" in out
