"""The demo for ``gunicorn --preload``: the guard is installed in the master, before the fork.

gunicorn imports this module once, in its master process, then forks the workers: the
guard (and its dispatcher and watchdog threads) must come back to life in each worker.
``PRELOAD_MARKER`` names a file where the master writes its pid and whether
its guard is installed, so a test knows the guard really was made before the fork.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loophound.demo.settings")

import loophound
from loophound.asgi import LoophoundMiddleware
from loophound.demo.asgi import django_application

guard = loophound.install()  # settings from LOOPHOUND_* (the test names a JSON-lines log)
application = LoophoundMiddleware(django_application)

_marker = os.environ.get("PRELOAD_MARKER")
if _marker:
    with open(_marker, "w", encoding="utf-8") as _out:
        _out.write(f"{os.getpid()} {guard.installed}\n")
