"""Fixtures of the reliability tests: real servers (tests/integration/servers.py), pytester.

The servers helper lives beside the integration tests; it is imported from there, not
copied. ``pytester`` is registered here, as tests/plugin/conftest.py does, for the
usage-error cases of the pytest plugin, which run pytest in this process.
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture(autouse=True)
def _no_loophound_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without LOOPHOUND_* variables from the outer environment."""
    for name in list(os.environ):
        if name.startswith("LOOPHOUND_"):
            monkeypatch.delenv(name)
