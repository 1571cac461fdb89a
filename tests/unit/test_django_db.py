"""Django's database on the loop thread: the cursor primitive and the async_unsafe soft mode.

Each test runs a small script in a fresh process with the demo project's settings
(``loophound.demo.settings``, its sqlite file under the test's own TMPDIR), so that
configuring Django never leaks into the other tests of this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from helpers import line_of

pytest.importorskip("django")

#: Upper bound of one script's run.
SCRIPT_BOUND = 60.0

PRELUDE = """\
import asyncio, json, os, sys, time
os.environ["DJANGO_SETTINGS_MODULE"] = "loophound.demo.settings"
import django
django.setup()
from django.conf import settings
from loophound.demo.database import prepare
prepare(settings.DATABASES["default"]["NAME"])
from loophound.demo.models import Item
import loophound
out = {}

def loud(events):
    return [
        {
            "operation": e.operation,
            "primitives": list(e.primitives),
            "detectors": list(e.detectors),
            "file": e.culprit.filename if e.culprit else None,
            "line": e.culprit.lineno if e.culprit else None,
        }
        for e in events
        if not e.quiet
    ]

"""
EPILOGUE = """
print("RESULT " + json.dumps(out))
"""


def run_script(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run PRELUDE + ``body`` in a fresh process; return the ``out`` dict it printed."""
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + textwrap.dedent(body) + EPILOGUE, encoding="utf-8")
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LOOPHOUND_") and k not in {"DJANGO_ALLOW_ASYNC_UNSAFE", "TMPDIR"}
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={**clean, "TMPDIR": str(tmp_path), **(env or {})},
        timeout=SCRIPT_BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, done.stdout + done.stderr
    out: dict[str, Any] = json.loads(results[0].removeprefix("RESULT "))
    return out


def test_a_sync_orm_query_on_the_loop_is_one_incident_at_the_orm_line(tmp_path: Path) -> None:
    """A sync ORM query in a coroutine (soft mode) is one incident at the ORM call's line."""
    out = run_script(
        tmp_path,
        """
        async def view():
            return [item.name for item in Item.objects.order_by("id")[:3]]  # orm-line

        with loophound.capture(sinks=(), async_unsafe="force-report") as events:
            out["names"] = asyncio.run(view())
        out["events"] = loud(events)
        """,
    )
    assert out["names"] == ["kettle", "lamp", "chair"]  # the query ran: soft mode
    (event,) = out["events"]
    assert event["file"] == str(tmp_path / "script.py")
    assert event["line"] == line_of("# orm-line", str(tmp_path / "script.py"))
    assert "django.db.execute" in [event["operation"], *event["primitives"]]
    assert "patches" in event["detectors"]


def test_report_mode_with_debug_reports_the_query(tmp_path: Path) -> None:
    """async_unsafe='report' is accepted with DEBUG on, and the count query is an incident."""
    out = run_script(
        tmp_path,
        """
        settings.DEBUG = True

        async def view():
            return Item.objects.count()  # count-line

        with loophound.capture(sinks=(), async_unsafe="report") as events:
            out["count"] = asyncio.run(view())
        out["events"] = loud(events)
        """,
    )
    assert out["count"] == 5
    (event,) = out["events"]
    assert event["line"] == line_of("# count-line", str(tmp_path / "script.py"))
    assert "django.db.execute" in [event["operation"], *event["primitives"]]


def test_report_mode_without_debug_is_refused(tmp_path: Path) -> None:
    """async_unsafe='report' with DEBUG False raises ConfigurationError and installs nothing."""
    out = run_script(
        tmp_path,
        """
        from loophound.asgi import LoophoundMiddleware

        sleep = time.sleep
        try:
            loophound.install(sinks=(), async_unsafe="report")
        except loophound.ConfigurationError as exc:
            out["install"] = str(exc)

        async def app(scope, receive, send):
            pass

        try:
            LoophoundMiddleware(app, async_unsafe="report")
        except loophound.ConfigurationError as exc:
            out["middleware"] = str(exc)
        out["active"] = loophound.active_guard() is not None
        out["patched"] = time.sleep is not sleep
        out["allow"] = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
        """,
    )
    for where in ("install", "middleware"):
        message = out[where]
        assert "async_unsafe" in message
        assert "'report'" in message
        assert "DEBUG is False" in message
        assert "'raise'" in message
        assert "'force-report'" in message
    assert out["active"] is False
    assert out["patched"] is False
    assert out["allow"] is None


def test_a_bad_async_unsafe_value_names_the_valid_ones(tmp_path: Path) -> None:
    """An unknown async_unsafe value is refused with the key, the value and the valid values."""
    out = run_script(
        tmp_path,
        """
        try:
            loophound.install(sinks=(), async_unsafe="soft")
        except loophound.ConfigurationError as exc:
            out["error"] = str(exc)
        """,
    )
    message = out["error"]
    assert "async_unsafe" in message
    assert "'soft'" in message
    for valid in ("raise", "report", "force-report"):
        assert valid in message


@pytest.mark.parametrize("previous", [None, "custom"], ids=["unset", "set"])
def test_force_report_sets_the_django_variable_and_uninstall_restores_it(
    tmp_path: Path, previous: str | None
) -> None:
    """force-report sets DJANGO_ALLOW_ASYNC_UNSAFE while installed; uninstall restores it."""
    env = {} if previous is None else {"DJANGO_ALLOW_ASYNC_UNSAFE": previous}
    out = run_script(
        tmp_path,
        """
        out["before"] = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
        guard = loophound.install(sinks=(), async_unsafe="force-report")
        out["during"] = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
        guard.uninstall()
        out["after"] = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
        """,
        env,
    )
    assert out["before"] == previous
    assert out["during"] == "true"
    assert out["after"] == previous


def test_raise_mode_keeps_djangos_error(tmp_path: Path) -> None:
    """With async_unsafe='raise' (the default) the sync ORM in a coroutine fails as in Django."""
    out = run_script(
        tmp_path,
        """
        from django.core.exceptions import SynchronousOnlyOperation

        async def view():
            try:
                Item.objects.count()
            except SynchronousOnlyOperation:
                return "refused"
            return "ran"

        with loophound.capture(sinks=()) as events:
            out["allow"] = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
            out["result"] = asyncio.run(view())
        out["events"] = loud(events)
        """,
    )
    assert out["allow"] is None
    assert out["result"] == "refused"
    assert out["events"] == []


def test_the_async_orm_and_sync_code_off_the_loop_report_nothing(tmp_path: Path) -> None:
    """The async ORM (run through sync_to_async) and queries outside a loop are no incidents."""
    out = run_script(
        tmp_path,
        """
        async def clean():
            names = [item.name async for item in Item.objects.order_by("id")]
            return names, await Item.objects.acount(), (await Item.objects.aget(pk=2)).name

        async def blocking():
            return Item.objects.count()  # control-line

        with loophound.capture(sinks=(), async_unsafe="force-report") as events:
            out["outside"] = Item.objects.filter(name="lamp").count()
            out["clean"] = asyncio.run(clean())
            loophound.active_guard().flush()
            out["clean_events"] = loud(events)
            out["control"] = asyncio.run(blocking())
        out["events"] = loud(events)
        """,
    )
    assert out["outside"] == 1
    names, count, second = out["clean"]
    assert count == len(names) == 5
    assert second == "lamp"
    assert out["clean_events"] == []
    # The cursor patch was in place all along: the sync query beside them is reported.
    (event,) = out["events"]
    assert event["line"] == line_of("# control-line", str(tmp_path / "script.py"))
