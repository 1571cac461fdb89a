"""What every benchmark shares: the machine description and docs/benchmarks.md sections."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import platform
import subprocess
from pathlib import Path

import loophound

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
#: The peers' import names, installed by the ``bench`` extra of pyproject.toml.
PEER_MODULES = {"blockbuster": "blockbuster", "pyleak": "pyleak", "aiodebug": "aiodebug"}
PEERS_INSTALL = ".venv/bin/python -m pip install -e '.[bench]'"


def missing_peers(tools: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """Return the peers among ``tools`` that cannot be imported here."""
    return [
        tool
        for tool in sorted(tools)
        if tool in PEER_MODULES and importlib.util.find_spec(PEER_MODULES[tool]) is None
    ]


def environment() -> list[tuple[str, str]]:
    """Return (key, value) pairs: date, versions, machine."""
    try:
        nproc = str(len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        nproc = str(os.cpu_count())
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("loophound", f"{loophound.__version__} (git {commit})"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("platform", platform.platform()),
        ("cpu", cpu),
        ("nproc", nproc),
    ]


def write_section(name: str, section: str, path: Path = DOC) -> None:
    """Replace the ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->`` part of the doc."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    body = section if section.startswith(begin) else f"{begin}\n{section.rstrip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start, stop = text.find(begin), text.find(end)
    if start >= 0 and stop > start:
        text = text[:start] + body + text[stop + len(end) :].removeprefix("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
