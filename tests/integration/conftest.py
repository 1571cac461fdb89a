"""Fixtures that start real servers on 127.0.0.1 (the table and helpers are in servers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Server, Variant, free_port, start_server


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """The demo project served by the test's ``Variant`` (indirect param), stopped by pid."""
    variant: Variant = request.param
    port = free_port()
    started = start_server(variant.command(port), port, tmp_path / "events.jsonl", {})
    try:
        yield started
    finally:
        started.stop()
