"""``loophound run``'s pieces: which apps get wrapped, the environment, sitecustomize chaining."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import loophound
from loophound.asgi import LoophoundMiddleware
from loophound.autowrap import looks_like_asgi3, wrap_application
from loophound.run import BOOTSTRAP, prepare_environment

VENV_BIN = os.path.dirname(sys.executable)
LOOPHOUND = os.path.join(VENV_BIN, "loophound")


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI 3 application: one coroutine function of three parameters."""


class Asgi2App:
    """An ASGI 2 application: a class made per connection, then called with receive, send."""

    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        """Serve the connection."""


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    """A WSGI application: a plain function."""
    start_response("200 OK", [])
    return [b""]


async def rsgi_like(scope: Any, protocol: Any) -> None:
    """An RSGI-like application: a coroutine function of two parameters."""


class Asgi3Instance:
    """An ASGI 3 application as an instance with an async ``__call__``."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve the connection."""


class SyncCallable:
    """An instance whose ``__call__`` has three parameters but is not async."""

    def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Not a coroutine."""


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        pytest.param(asgi3_function, True, id="async-function-3-params"),
        pytest.param(Asgi3Instance(), True, id="instance-async-call"),
        pytest.param(Asgi2App, False, id="asgi2-class"),
        pytest.param(wsgi_app, False, id="wsgi-function"),
        pytest.param(rsgi_like, False, id="rsgi-like-2-params"),
        pytest.param(SyncCallable(), False, id="sync-call-3-params"),
        pytest.param(object(), False, id="not-callable"),
    ],
)
def test_looks_like_asgi3_accepts_only_async_callables_of_three_parameters(
    app: object, expected: bool
) -> None:
    """looks_like_asgi3 is true for an async callable of three parameters and false otherwise."""
    assert looks_like_asgi3(app) is expected


def test_wrap_application_wraps_an_asgi3_app_once(capsys: pytest.CaptureFixture[str]) -> None:
    """An ASGI 3 app is wrapped in LoophoundMiddleware, and wrapping the result again is a no-op."""
    wrapped = wrap_application(asgi3_function, "uvicorn")
    assert isinstance(wrapped, LoophoundMiddleware)
    assert wrapped.app is asgi3_function
    assert wrap_application(wrapped, "uvicorn") is wrapped
    assert loophound.active_guard() is None  # wrapping installs nothing by itself
    assert "loophound run: uvicorn: watching" in capsys.readouterr().err


def test_wrap_application_leaves_a_wsgi_app_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """A WSGI app is returned unchanged and the user is told why it is not watched."""
    assert wrap_application(wsgi_app, "hypercorn") is wsgi_app
    err = capsys.readouterr().err
    assert "hypercorn" in err
    assert "not an ASGI 3 application; left unwrapped" in err


def test_prepare_environment_puts_the_bootstrap_first_and_keeps_the_rest() -> None:
    """The bootstrap directory comes first on PYTHONPATH, the user's entries follow in order."""
    environ = {"PYTHONPATH": os.pathsep.join(["/srv/app", "/srv/lib"]), "HOME": "/home/u"}
    prepared = prepare_environment(environ)
    assert prepared["PYTHONPATH"].split(os.pathsep) == [BOOTSTRAP, "/srv/app", "/srv/lib"]
    assert prepared["HOME"] == "/home/u"
    assert environ["PYTHONPATH"] == os.pathsep.join(["/srv/app", "/srv/lib"])  # not mutated


def test_prepare_environment_never_duplicates_the_bootstrap() -> None:
    """Preparing twice, or a PYTHONPATH that already names the bootstrap, lists it once."""
    once = prepare_environment({"PYTHONPATH": os.pathsep.join(["/srv/app", BOOTSTRAP, ""])})
    twice = prepare_environment(once)
    assert once["PYTHONPATH"].split(os.pathsep) == [BOOTSTRAP, "/srv/app"]
    assert twice == once


def test_prepare_environment_without_pythonpath_sets_only_the_bootstrap() -> None:
    """With no PYTHONPATH at all, it becomes exactly the bootstrap directory."""
    assert prepare_environment({})["PYTHONPATH"] == BOOTSTRAP
    assert os.path.isfile(os.path.join(BOOTSTRAP, "sitecustomize.py"))


def test_a_users_sitecustomize_still_runs_under_loophound_run(tmp_path: Path) -> None:
    """A sitecustomize.py on the user's PYTHONPATH runs after loophound's own, in the server."""
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "marker.txt"
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import os, sys
            with open({str(marker)!r}, "w", encoding="utf-8") as out:
                out.write(f"{{os.getpid()}} {{'loophound.autowrap' in sys.modules}}")
            """
        ),
        encoding="utf-8",
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOPHOUND_")}
    env = {**clean, "PATH": VENV_BIN + os.pathsep + clean.get("PATH", ""), "PYTHONPATH": str(site)}
    # `python -m uvicorn --version` is a server command that exits by itself.
    process = subprocess.Popen(
        [LOOPHOUND, "run", "--", "python", "-m", "uvicorn", "--version"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, err
    assert "uvicorn" in out
    assert "not active" not in err
    pid, activated = marker.read_text(encoding="utf-8").split()
    assert int(pid) == process.pid  # run exec'd the server in place
    assert activated == "True"  # loophound's bootstrap ran first, then the user's file
