"""The package's import footprint and its public names."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import types

import loophound

HEAVY = ("django", "opentelemetry", "pytest", "asgiref")
PROBE = (
    "import sys, loophound; "
    "print(sorted(m for m in sys.modules if m.split('.')[0] in {'django','opentelemetry',"
    "'pytest','asgiref'}))"
)


def test_import_loads_no_framework() -> None:
    """A fresh `import loophound` loads none of django, opentelemetry, pytest or asgiref."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPHOUND_")}
    env.pop("PYTHONSTARTUP", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    assert ast.literal_eval(result.stdout.strip()) == []


def test_install_loads_no_framework() -> None:
    """Installing and using a guard in a fresh process still loads none of those packages."""
    code = (
        "import asyncio, sys, time, loophound\n"
        "async def main():\n"
        "    time.sleep(0.001)\n"
        "with loophound.capture() as events:\n"
        "    asyncio.run(main())\n"
        "assert events, 'no event'\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPHOUND_")}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    assert ast.literal_eval(result.stdout.strip().splitlines()[-1]) == []


def test_all_names_each_public_object_once() -> None:
    """`loophound.__all__` has no duplicate and every name in it resolves."""
    names = loophound.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(loophound, name), name
        assert getattr(loophound, name) is not None


def test_all_covers_every_public_attribute() -> None:
    """Every public non-module attribute of loophound is listed in `__all__`, and in order."""
    public = {
        name
        for name, value in vars(loophound).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }
    assert public | {"__version__"} == set(loophound.__all__)
    assert list(loophound.__all__) == sorted(loophound.__all__)


def test_all_objects_are_the_documented_kinds() -> None:
    """The public objects are what their names promise: classes, functions, a version string."""
    assert isinstance(loophound.__version__, str)
    for name in ("BlockingCallError", "BlockingCallWarning", "ConfigurationError"):
        assert issubclass(getattr(loophound, name), Exception)
    assert issubclass(loophound.BlockingCallWarning, Warning)
    assert issubclass(loophound.ConfigurationError, ValueError)
    for name in ("Event", "Frame", "Guard", "allow_blocking"):
        assert inspect.isclass(getattr(loophound, name))
    for name in ("active_guard", "capture", "guard", "install"):
        assert callable(getattr(loophound, name))
