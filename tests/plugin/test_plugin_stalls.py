"""Stalls (code that holds the loop without a named blocking call) and per-test thresholds."""

from __future__ import annotations

from plugin_checks import Project, expect_report

SPIN = """
import time

import pytest


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # culprit:spin
        pass
"""


def test_cpu_spin_fails_unless_the_marker_raises_the_threshold(project: Project) -> None:
    """A 0.3 s CPU spin fails with operation cpu, and passes under loophound(threshold=1.0)."""
    project.ini()
    project.write(
        "test_spin.py",
        SPIN
        + """

async def test_spins():
    spin(0.3)


@pytest.mark.loophound(threshold=1.0)
async def test_spins_under_a_lenient_threshold():
    spin(0.3)
""",
    )
    result = project.run("--loophound")
    result.assert_outcomes(passed=1, failed=1)
    culprit = project.location("test_spin.py", "culprit:spin")
    expect_report(
        result,
        "test_spins",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        f"loophound: cpu blocked the event loop for * ms at {culprit} in spin",
    )


def test_marker_threshold_stricter_than_the_session(project: Project) -> None:
    """At session threshold 0.5 a 0.15 s spin passes, and fails under loophound(threshold=0.05)."""
    project.ini()
    project.write(
        "test_strict_spin.py",
        SPIN
        + """

async def test_spins_under_the_session_threshold():
    spin(0.15)


@pytest.mark.loophound(threshold=0.05)
async def test_spins_under_a_strict_threshold():
    spin(0.15)
""",
    )
    result = project.run("--loophound", "--loophound-threshold=0.5")
    result.assert_outcomes(passed=1, failed=1)
    culprit = project.location("test_strict_spin.py", "culprit:spin")
    expect_report(
        result,
        "test_spins_under_a_strict_threshold",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        f"loophound: * blocked the event loop for * ms at {culprit} in spin",
    )
