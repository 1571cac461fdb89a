"""Every way a test runs an event loop is watched: the blocking test fails, the clean one passes."""

from __future__ import annotations

from plugin_checks import Project, expect_report


def _blocked(location: str, function: str, operation: str = "time.sleep") -> str:
    return f"loophound: {operation} blocked the event loop for * ms at {location} in {function}"


def test_pytest_asyncio_auto_mode_and_asyncio_run(project: Project) -> None:
    """In auto mode and under asyncio.run a blocking test fails at its culprit; clean passes."""
    project.ini()
    project.write(
        "test_auto.py",
        """
        import asyncio
        import time


        async def test_blocks():
            time.sleep(0.01)  # culprit:auto


        async def test_clean():
            await asyncio.sleep(0.01)


        def test_asyncio_run_blocks():
            async def main():
                time.sleep(0.01)  # culprit:run

            asyncio.run(main())


        def test_asyncio_run_clean():
            asyncio.run(asyncio.sleep(0.01))


        def test_sync_sleep_without_a_loop():
            time.sleep(0.01)
        """,
    )
    result = project.run("--loophound")
    result.assert_outcomes(passed=3, failed=2)
    during = "loophound: the event loop was blocked 1 time during the test"
    auto = project.location("test_auto.py", "culprit:auto")
    expect_report(result, "test_blocks", during, "", _blocked(auto, "test_blocks"))
    run = project.location("test_auto.py", "culprit:run")
    expect_report(
        result,
        "test_asyncio_run_blocks",
        during,
        "",
        _blocked(run, "test_asyncio_run_blocks.<locals>.main"),
    )


def test_pytest_asyncio_strict_mode_and_anyio(project: Project) -> None:
    """In strict mode and under anyio, a blocking test fails at its culprit; a clean one passes."""
    project.ini(asyncio_mode="strict")
    project.write(
        "test_strict.py",
        """
        import asyncio
        import time

        import pytest


        @pytest.fixture
        def anyio_backend():
            return "asyncio"


        @pytest.mark.asyncio
        async def test_strict_blocks():
            time.sleep(0.01)  # culprit:strict


        @pytest.mark.asyncio
        async def test_strict_clean():
            await asyncio.sleep(0.01)


        @pytest.mark.anyio
        async def test_anyio_blocks():
            time.sleep(0.01)  # culprit:anyio


        @pytest.mark.anyio
        async def test_anyio_clean():
            await asyncio.sleep(0.01)
        """,
    )
    result = project.run("--loophound")
    result.assert_outcomes(passed=2, failed=2)
    during = "loophound: the event loop was blocked 1 time during the test"
    strict = project.location("test_strict.py", "culprit:strict")
    expect_report(result, "test_strict_blocks", during, "", _blocked(strict, "test_strict_blocks"))
    anyio = project.location("test_strict.py", "culprit:anyio")
    expect_report(result, "test_anyio_blocks", during, "", _blocked(anyio, "test_anyio_blocks"))


def test_pytest_django_async_client(project: Project) -> None:
    """A sleeping async Django view fails its AsyncClient test at the view's line; clean passes."""
    project.ini("DJANGO_SETTINGS_MODULE = lhsettings")
    project.write(
        "lhsettings.py",
        """
        SECRET_KEY = "not-a-secret"
        DEBUG = True
        ALLOWED_HOSTS = ["*"]
        ROOT_URLCONF = "lhurls"
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
        INSTALLED_APPS = []
        MIDDLEWARE = []
        USE_TZ = True
        """,
    )
    project.write(
        "lhurls.py",
        """
        import time

        from django.http import HttpResponse
        from django.urls import path


        async def slow(request):
            time.sleep(0.01)  # culprit:view
            return HttpResponse("slow")


        async def fast(request):
            return HttpResponse("fast")


        urlpatterns = [path("slow/", slow), path("fast/", fast)]
        """,
    )
    project.write(
        "test_views.py",
        """
        from django.test import AsyncClient


        async def test_slow_view():
            response = await AsyncClient().get("/slow/")
            assert response.status_code == 200


        async def test_fast_view():
            response = await AsyncClient().get("/fast/")
            assert response.status_code == 200
        """,
    )
    result = project.run("--loophound")
    result.assert_outcomes(passed=1, failed=1)
    view = project.location("lhurls.py", "culprit:view")
    expect_report(
        result,
        "test_slow_view",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        _blocked(view, "slow"),
    )


def test_asgiref_async_to_sync_loop_in_a_thread(project: Project) -> None:
    """A coroutine run by async_to_sync in a thread fails the test at its line; clean passes."""
    project.ini()
    project.write(
        "test_asgiref.py",
        """
        import asyncio
        import threading
        import time

        from asgiref.sync import async_to_sync

        loop_threads = []


        async def blocker():
            loop_threads.append(threading.current_thread())
            time.sleep(0.01)  # culprit:a2s


        async def clean():
            await asyncio.sleep(0.01)


        def test_async_to_sync_blocks():
            async_to_sync(blocker)()
            assert loop_threads != [threading.current_thread()]  # the loop ran elsewhere


        def test_async_to_sync_clean():
            async_to_sync(clean)()
        """,
    )
    result = project.run("--loophound")
    result.assert_outcomes(passed=1, failed=1)
    culprit = project.location("test_asgiref.py", "culprit:a2s")
    expect_report(
        result,
        "test_async_to_sync_blocks",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        _blocked(culprit, "blocker"),
    )
