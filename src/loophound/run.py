"""``loophound run -- SERVER ARGS...``: serve an app with loophound, without editing it.

Like ``opentelemetry-instrument``: checks the ``LOOPHOUND_*`` settings, puts
``loophound/_bootstrap`` first on ``PYTHONPATH`` (its ``sitecustomize`` hooks the
server's application loader, see ``loophound.autowrap``) and replaces this process
with the server, so that signals and the process id are the server's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

from loophound._config import resolve_config
from loophound.exceptions import ConfigurationError

__all__ = ["BOOTSTRAP", "SERVERS", "prepare_environment", "run"]

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")
#: The servers whose application loader loophound knows how to wrap.
SERVERS = ("uvicorn", "hypercorn", "daphne", "granian")


def prepare_environment(environ: dict[str, str]) -> dict[str, str]:
    """Return ``environ`` with the bootstrap directory first on ``PYTHONPATH``."""
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP]
    return {**environ, "PYTHONPATH": os.pathsep.join([BOOTSTRAP, *paths])}


def _server_name(command: Sequence[str]) -> str | None:
    """Return the server a command starts (``uvicorn`` or ``python -m uvicorn``)."""
    program = os.path.basename(command[0])
    if program in SERVERS:
        return program
    if len(command) >= 3 and program.startswith("python") and command[1] == "-m":
        module = command[2].split(".")[0]
        return module if module in SERVERS else None
    return None


def run(command: Sequence[str]) -> int:  # noqa: RET503 - on success execve never returns
    """Check settings and the command, then exec the server; returns only on error."""
    if not command:
        print(
            "loophound run: missing the server command; e.g. "
            "loophound run -- uvicorn proj.asgi:application",
            file=sys.stderr,
        )
        return 2
    if _server_name(command) is None:
        print(
            f"loophound run: invalid server command {command[0]!r}: loophound can wrap the "
            f"application of {', '.join(SERVERS)} (or python -m one of them)",
            file=sys.stderr,
        )
        return 2
    try:
        resolve_config({})  # LOOPHOUND_* variables: a bad one stops here
    except ConfigurationError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    executable = shutil.which(command[0])
    if executable is None:
        print(
            f"loophound run: cannot find {command[0]!r} on PATH; is it installed in this "
            "environment?",
            file=sys.stderr,
        )
        return 2
    # The server replaces this process: its signals and pid are the ones users manage.
    os.execve(executable, list(command), prepare_environment(dict(os.environ)))  # noqa: S606
