"""Zero-code activation: wrap the application a server loads in LoophoundMiddleware.

``loophound run -- uvicorn proj.asgi:application`` puts ``loophound/_bootstrap`` on
``PYTHONPATH``; its ``sitecustomize`` calls ``activate()`` in the server's process and
in every worker process it starts. ``activate()`` waits for the server's own loader
module to be imported and wraps the function that returns the user's application:

| server    | module            | function                                |
|-----------|-------------------|-----------------------------------------|
| uvicorn   | uvicorn.config    | ``Config.load_app`` (and its factory)    |
| hypercorn | hypercorn.utils   | ``wrap_app`` (before the ASGI/WSGI pick) |
| daphne    | daphne.cli        | ``CommandLineInterface.load_asgi_app``   |
| granian   | granian._internal | ``load_target``                          |

Only an application that looks like ASGI 3 (``async def __call__(scope, receive,
send)``) is wrapped; a WSGI or RSGI application is left alone, and so is one that is
already a ``LoophoundMiddleware``. Settings come from ``LOOPHOUND_*`` variables and
Django's ``settings.LOOPHOUND``, validated when the application is wrapped.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["activate", "looks_like_asgi3", "wrap_application"]

_Hook = Callable[[ModuleType], None]
_said: set[tuple[int, str]] = set()


def looks_like_asgi3(app: object) -> bool:
    """True for an ``async`` callable of three positional parameters."""
    if inspect.isclass(app):
        return False  # ASGI 2: a class made per connection
    call: object = app
    if not inspect.isfunction(app) and not inspect.ismethod(app):
        call = getattr(app, "__call__", None)  # noqa: B004 - the method, not callable()
    if not inspect.iscoroutinefunction(call):
        return False
    try:
        parameters = inspect.signature(app).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 3


def wrap_application(app: Any, server: str) -> Any:
    """Return ``LoophoundMiddleware(app)`` when ``app`` is an ASGI 3 app, else ``app``."""
    from loophound.asgi import LoophoundMiddleware  # noqa: PLC0415 - after the server's imports

    if isinstance(app, LoophoundMiddleware):
        return app
    if not looks_like_asgi3(app):
        _say(f"{server}: {app!r} is not an ASGI 3 application; left unwrapped")
        return app
    wrapped = LoophoundMiddleware(app)
    said = (os.getpid(), server)
    if said not in _said:  # uvicorn loads the app twice: once to fail fast
        _said.add(said)
        _say(f"{server}: watching {_name(app)} (pid {os.getpid()})")
    return wrapped


def _name(app: object) -> str:
    kind = type(app)
    if inspect.isfunction(app):
        return f"{app.__module__}.{app.__qualname__}"
    return f"a {kind.__module__}.{kind.__qualname__}"


def _say(text: str) -> None:
    print(f"loophound run: {text}", file=sys.stderr, flush=True)


# -- the servers' loaders --------------------------------------------------------------


def _hook_uvicorn(module: ModuleType) -> None:
    config = module.Config
    original = config.load_app

    @functools.wraps(original)
    def load_app(self: Any) -> Any:
        app = original(self)
        if getattr(self, "factory", False):
            factory = app

            @functools.wraps(factory)
            def make() -> Any:
                return wrap_application(factory(), "uvicorn")

            return make
        return wrap_application(app, "uvicorn")

    config.load_app = load_app


def _hook_hypercorn(module: ModuleType) -> None:
    original = module.wrap_app

    @functools.wraps(original)
    def wrap_app(app: Any, wsgi_max_body_size: int, mode: str | None) -> Any:
        if mode != "wsgi":
            app = wrap_application(app, "hypercorn")
        return original(app, wsgi_max_body_size, mode)

    setattr(module, "wrap_app", wrap_app)  # noqa: B010 - a module mypy cannot see


def _hook_daphne(module: ModuleType) -> None:
    cli = module.CommandLineInterface
    original = cli.load_asgi_app

    @functools.wraps(original)
    def load_asgi_app(self: Any, path: str) -> Any:
        return wrap_application(original(self, path), "daphne")

    cli.load_asgi_app = load_asgi_app


def _hook_granian(module: ModuleType) -> None:
    original = module.load_target

    # functools.wraps keeps the module and name, so that granian can still pickle it
    # by reference for its spawned workers (which run this hook again themselves).
    @functools.wraps(original)
    def load_target(*args: Any, **kwargs: Any) -> Any:
        return wrap_application(original(*args, **kwargs), "granian")

    setattr(module, "load_target", load_target)  # noqa: B010 - a module mypy cannot see


HOOKS: dict[str, _Hook] = {
    "uvicorn.config": _hook_uvicorn,
    "hypercorn.utils": _hook_hypercorn,
    "daphne.cli": _hook_daphne,
    "granian._internal": _hook_granian,
}


def _run_hook(name: str, module: ModuleType) -> None:
    try:
        HOOKS[name](module)
    except Exception as exc:  # the server starts anyway, unwatched, and says so
        _say(f"cannot hook {name} ({type(exc).__name__}: {exc}); this server is not watched")


class _HookedLoader(importlib.abc.Loader):
    """Runs the real loader, then the hook of the module it made."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _run_hook(self._name, module)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds the hooked modules through the other finders and hooks their loader."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in HOOKS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookedLoader(spec.loader, fullname)
                return spec
        return None


_finder = _PostImportFinder()


def activate() -> None:
    """Hook every server loader: now if imported, else when it is imported."""
    for name in HOOKS:
        module = sys.modules.get(name)
        if module is not None:
            _run_hook(name, module)
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
