"""Arguments reduced to what is safe to keep: no credentials, queries or command lines."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_command", "redact_host", "redact_path", "redact_url"]


def redact_host(host: object) -> str:
    """Return a host name without credentials (``user:secret@host`` -> ``host``)."""
    if isinstance(host, bytes):
        host = host.decode("utf-8", "replace")
    if not isinstance(host, str):
        return "?" if host is not None else "-"
    return host.rpartition("@")[2]


def redact_url(url: object) -> str:
    """Return a URL without user, password, query string or fragment."""
    text = getattr(url, "full_url", url)  # urllib.request.Request carries its URL
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return "?"
    try:
        parts = urlsplit(text)
    except ValueError:
        return "?"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_command(command: object) -> str:
    """Return only the program name of a command line (never its arguments)."""
    first: object = command
    if isinstance(command, (list, tuple)):
        first = command[0] if command else ""
    if isinstance(first, os.PathLike):
        first = os.fspath(first)
    if isinstance(first, bytes):
        first = first.decode("utf-8", "replace")
    if not isinstance(first, str):
        return "?"
    if not isinstance(command, (list, tuple)):
        first = first.strip().split(" ", 1)[0]
    return os.path.basename(first) or "?"


def redact_path(path: object) -> str:
    """Return a file path as text (paths are kept: they name the user's own files)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        return path.decode("utf-8", "replace")
    if isinstance(path, str):
        return path
    return "?"
