"""Allowing blocking code: the loophound_allow fixture, allow_blocking, and stale allow rules."""

from __future__ import annotations

from plugin_checks import Project, expect_report, section


def test_allow_fixture_and_allow_blocking(project: Project) -> None:
    """Blocking inside loophound_allow or allow_blocking passes; after the scope it fails."""
    project.ini()
    project.write(
        "test_scopes.py",
        """
        import time

        import loophound


        async def test_fixture_scope(loophound_allow):
            with loophound_allow("a test double that sleeps"):
                time.sleep(0.01)


        async def test_allow_blocking_scope():
            with loophound.allow_blocking("a test double that sleeps"):
                time.sleep(0.01)


        @loophound.allow_blocking("a test double that sleeps")
        async def helper():
            time.sleep(0.01)


        async def test_allow_blocking_decorator():
            await helper()


        async def test_after_the_scope(loophound_allow):
            with loophound_allow("only this block"):
                time.sleep(0.01)
            time.sleep(0.01)  # culprit:after
        """,
    )
    result = project.run("--loophound")
    result.assert_outcomes(passed=3, failed=1)
    after = project.location("test_scopes.py", "culprit:after")
    expect_report(
        result,
        "test_after_the_scope",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        f"loophound: time.sleep blocked the event loop for * ms at {after} in test_after_the_scope",
    )


MARKED_TESTS = """
import os
import time

import pytest


@pytest.mark.loophound(allow=["operation:time.sleep", "module:unused_marker_module"])
async def test_marker_rules():
    time.sleep(0.01)


async def test_listdir():
    os.listdir(".")
"""


def test_unused_rules_from_ini_and_markers_are_listed(project: Project) -> None:
    """Unmatched allow rules from the ini and markers are listed at the end; matched ones not."""
    project.ini(
        "loophound = true",
        "loophound_allow =",
        "    operation:os.listdir",
        "    module:unused_ini_module",
    )
    project.write("test_rules.py", MARKED_TESTS)
    result = project.run()
    result.assert_outcomes(passed=2)
    assert section(result, "loophound: allow rules that never matched") == [
        "  module:unused_ini_module",
        "  module:unused_marker_module",
    ]


def test_unused_rules_from_the_command_line_are_listed(project: Project) -> None:
    """Unmatched --loophound-allow rules (they replace the ini's) are listed; matched ones not."""
    project.ini("loophound_allow = module:ini_rule_overridden")
    project.write("test_rules.py", MARKED_TESTS)
    result = project.run(
        "--loophound",
        "--loophound-allow=module:unused_cli_module",
        "--loophound-allow=operation:os.listdir",
    )
    result.assert_outcomes(passed=2)
    assert section(result, "loophound: allow rules that never matched") == [
        "  module:unused_cli_module",
        "  module:unused_marker_module",
    ]
