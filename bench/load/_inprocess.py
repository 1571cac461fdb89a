"""Serve the load site's four views in this process, with no server: for cachegrind.

    LOAD_DB=... IN_VARIANT=loophound IN_DETECTORS=patches IN_REQUESTS=240 python _inprocess.py

``IN_VARIANT``: ``baseline``, ``loophound``, ``otel`` or ``otel+loophound`` (the
same stacks as ``loadsite/asgi.py``); ``IN_DETECTORS``: loophound's detectors,
comma-separated, ``none`` for the middleware alone, unset for all four.
``IN_REQUESTS`` requests rotate over the views, 20 at a time, each a real ASGI call
into Django (sync and async views, the ORM on sqlite, a template). The threshold is
30 s: under valgrind every step is tens of times slower, and a slow step reported
would be work the real service never does.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loadsite.settings")
VARIANT = os.environ.get("IN_VARIANT", "baseline")
os.environ["LOAD_VARIANT"] = "otel" if VARIANT.startswith("otel") else "baseline"

from loadsite import asgi  # noqa: E402 - configured by the variables above

THRESHOLD = 30.0
CONCURRENCY = 20
PATHS = ("/json/", "/orm/", "/template/", "/sync/")


def _application() -> Any:
    if VARIANT in ("baseline", "otel"):
        return asgi.application
    from loophound.asgi import LoophoundMiddleware

    settings: dict[str, Any] = {"threshold": THRESHOLD}
    detectors = os.environ.get("IN_DETECTORS")
    if detectors:
        settings["detectors"] = () if detectors == "none" else tuple(detectors.split(","))
    if VARIANT == "loophound":
        return LoophoundMiddleware(asgi.django_application, **settings)
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    settings["sinks"] = ("warnings", "logging", "otel")
    return OpenTelemetryMiddleware(LoophoundMiddleware(asgi.django_application, **settings))


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _one(app: Any, path: str) -> None:
    received = False
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # Django listens for a disconnect while the view runs: the client stays.
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope(path), receive, send)
    if statuses != [200]:
        raise SystemExit(f"{path}: responses {statuses}")


async def _serve(app: Any, count: int) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with limit:
            await _one(app, PATHS[i % len(PATHS)])

    await asyncio.gather(*(one(i) for i in range(count)))


def main() -> None:
    app = _application()
    asyncio.run(_serve(app, int(os.environ.get("IN_REQUESTS", "40"))))
    import loophound

    guard = loophound.active_guard()
    incidents = guard.stats.incidents if guard is not None else 0
    print(f"incidents={incidents}", flush=True)


if __name__ == "__main__":
    main()
