"""Real servers on 127.0.0.1: start them, wait until they listen, stop them by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process under test and the event log it writes."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self) -> list[dict[str, Any]]:
        """Return the JSON records written so far."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def stop(self) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL after 15 s."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start_server(command: list[str], port: int, log: Path, env: dict[str, str]) -> Server:
    """Start ``command`` and wait (at most 30 s) until 127.0.0.1:port accepts connections."""
    full_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "loophound.demo.settings",
        "LOOPHOUND_JSONL": str(log),
        "LOOPHOUND_SINKS": "jsonl",
        **env,
    }
    process = subprocess.Popen(command, env=full_env)
    server = Server(process, port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{command[:3]} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise AssertionError(f"{command[:3]} did not listen on {port} within 30 s")
