"""Fixtures of the pytest plugin's tests: a throwaway project that runs pytest in a subprocess.

Every scenario runs in a fresh ``pytest`` subprocess (``pytester.runpytest_subprocess``):
the plugin installs a process-wide guard, which must never nest inside this session's
process. The subprocess finds the plugin through its ``pytest11`` entry point.
"""

from __future__ import annotations

import os

import pytest
from plugin_checks import Project


def pytest_configure(config: pytest.Config) -> None:
    # ``pytest_plugins = ["pytester"]`` is refused in a conftest below the rootdir once
    # the whole suite runs (pytest: "Defining 'pytest_plugins' in a non-top-level
    # conftest is no longer supported"); registering it here is what ``-p pytester`` does.
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A throwaway project; the subprocess sees no loophound or Django settings of ours."""
    for key in list(os.environ):
        if key.startswith("LOOPHOUND_"):
            monkeypatch.delenv(key)
    for key in ("DJANGO_SETTINGS_MODULE", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    return Project(pytester)
