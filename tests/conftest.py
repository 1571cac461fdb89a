"""Fixtures for every test; the helpers tests import live in helpers.py beside this file."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pytest

import loophound

sys.path.insert(0, os.path.dirname(__file__))

from helpers import BOUND


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1, closed after the test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(BOUND)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


@pytest.fixture(autouse=True)
def _no_guard_leaks() -> Iterator[None]:
    """Every test starts and ends with no guard installed."""
    assert loophound.active_guard() is None
    yield
    leaked = loophound.active_guard()
    if leaked is not None:
        leaked.uninstall()
        pytest.fail("a test left a loophound guard installed")
