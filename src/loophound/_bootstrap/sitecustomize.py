# ruff: noqa: INP001 - a directory on PYTHONPATH, not a package: Python imports this file by name
"""Imported by Python at start-up in processes that ``loophound run`` started.

It hooks the ASGI servers' application loaders (``loophound.autowrap``), then runs
the ``sitecustomize`` this one hides, if the environment had one.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _activate() -> None:
    try:
        from loophound.autowrap import activate  # noqa: PLC0415

        activate()
    except Exception as exc:  # never stop the server from starting
        print(f"loophound run: not active ({type(exc).__name__}: {exc})", file=sys.stderr)


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_activate()
_chain()
