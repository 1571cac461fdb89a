"""Pytest's warnings handling stays intact: warnings-as-errors still fail tests cleanly."""

from __future__ import annotations

import pytest
from plugin_checks import Project, expect_report

TESTS = """
import asyncio
import time

import pytest


async def test_sleeps():
    time.sleep(0.01)  # culprit:sleep


async def test_spins():
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # culprit:spin
        pass


async def test_clean():
    await asyncio.sleep(0.01)
"""


def test_warn_mode_under_filterwarnings_error_fails_the_tests(project: Project) -> None:
    """Under filterwarnings = error, mode warn fails blocking tests and pytest does not crash."""
    project.ini("filterwarnings = error", "loophound = true", "loophound_mode = warn")
    project.write("test_strict.py", TESTS)
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=2)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    sleep = project.location("test_strict.py", "culprit:sleep")
    result.stdout.fnmatch_lines(
        [
            (
                "E       loophound.exceptions.BlockingCallError: "
                f"time.sleep would block the event loop at {sleep}.*"
            )
        ]
    )
    spin = project.location("test_strict.py", "culprit:spin")
    expect_report(
        result,
        "test_spins",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        f"loophound: cpu blocked the event loop for * ms at {spin} in test_spins",
    )


def test_mode_off_under_filterwarnings_error_passes(project: Project) -> None:
    """A test marked loophound(mode="off") passes even when the ini turns warnings into errors."""
    project.ini("filterwarnings = error", "loophound = true")
    project.write(
        "test_off.py",
        """
        import time

        import pytest


        @pytest.mark.loophound(mode="off")
        async def test_off():
            time.sleep(0.01)
        """,
    )
    result = project.run()
    result.assert_outcomes(passed=1)
