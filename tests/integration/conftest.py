"""Fixtures that start real servers on 127.0.0.1 (helpers in servers.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Server, free_port, start_server


@pytest.fixture
def uvicorn_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """uvicorn serving the demo project, with the loop and worker count of the test's param."""
    loop, workers = getattr(request, "param", ("asyncio", 1))
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "loophound.demo.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        loop,
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = start_server(command, port, tmp_path / "events.jsonl", {})
    try:
        yield server
    finally:
        server.stop()
