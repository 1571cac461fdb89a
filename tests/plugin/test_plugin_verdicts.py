"""Which phase's report carries the verdict, and what a test that already failed keeps."""

from __future__ import annotations

from plugin_checks import Project, expect_lines, expect_report, report


def test_call_phase_verdicts(project: Project) -> None:
    """A blocking test that passes fails; one that already fails keeps its failure first."""
    project.ini()
    project.write(
        "test_call.py",
        """
        import time


        async def test_blocks_and_passes():
            time.sleep(0.01)  # culprit:passes


        async def test_blocks_and_fails():
            time.sleep(0.01)  # culprit:fails
            assert 1 == 2, "its own failure"


        async def test_clean():
            pass
        """,
    )
    result = project.run("--loophound", "-rfE")
    result.assert_outcomes(passed=1, failed=2, errors=0)
    passes = project.location("test_call.py", "culprit:passes")
    expect_report(
        result,
        "test_blocks_and_passes",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        f"loophound: time.sleep blocked the event loop for * ms at {passes} "
        "in test_blocks_and_passes",
    )
    fails = project.location("test_call.py", "culprit:fails")
    own_first = report(result, "test_blocks_and_fails")
    own_first.fnmatch_lines(
        [
            "    async def test_blocks_and_fails():",
            '>       assert 1 == 2, "its own failure"',
            "E       AssertionError: its own failure",
            "test_call.py:*: AssertionError",
            "-* loophound call -*",
            "loophound: the event loop was blocked 1 time during the test",
            "",
            (
                f"loophound: time.sleep blocked the event loop for * ms at {fails} "
                "in test_blocks_and_fails"
            ),
        ]
    )
    expect_lines(
        result,
        "FAILED test_call.py::test_blocks_and_passes - loophound: the event loop*",
        "FAILED test_call.py::test_blocks_and_fails - AssertionError: its own failure*",
    )


def test_fixture_setup_and_teardown_are_errors(project: Project) -> None:
    """Blocking in an async fixture's setup or teardown is one error of that phase."""
    project.ini()
    project.write(
        "test_fixtures.py",
        """
        import time

        import pytest


        @pytest.fixture
        async def blocks_in_setup():
            time.sleep(0.01)  # culprit:setup
            yield


        @pytest.fixture
        async def blocks_in_teardown():
            yield
            time.sleep(0.01)  # culprit:teardown


        @pytest.fixture
        async def clean_fixture():
            yield


        async def test_setup_blocks(blocks_in_setup):
            pass


        async def test_teardown_blocks(blocks_in_teardown):
            pass


        async def test_call_and_teardown_block(blocks_in_teardown):
            time.sleep(0.01)  # culprit:call


        async def test_clean_fixture(clean_fixture):
            pass
        """,
    )
    result = project.run("--loophound")
    # setup error: the test does not run; teardown errors: the tests themselves were judged.
    result.assert_outcomes(passed=2, failed=1, errors=3)
    setup = project.location("test_fixtures.py", "culprit:setup")
    teardown = project.location("test_fixtures.py", "culprit:teardown")
    call = project.location("test_fixtures.py", "culprit:call")
    expect_report(
        result,
        "ERROR at setup of test_setup_blocks",
        "loophound: the event loop was blocked 1 time during setup",
        "",
        f"loophound: time.sleep blocked the event loop for * ms at {setup} in blocks_in_setup",
    )
    for test in ("test_teardown_blocks", "test_call_and_teardown_block"):
        expect_report(
            result,
            f"ERROR at teardown of {test}",
            "loophound: the event loop was blocked 1 time during teardown",
            "",
            f"loophound: time.sleep blocked the event loop for * ms at {teardown} "
            "in blocks_in_teardown",
        )
    expect_report(
        result,
        "test_call_and_teardown_block",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        f"loophound: time.sleep blocked the event loop for * ms at {call} "
        "in test_call_and_teardown_block",
    )


def test_first_import_of_a_module_does_not_fail_the_test(project: Project) -> None:
    """A test that imports a module for the first time on the loop passes: imports are quiet."""
    project.ini()
    project.write("lh_fresh_module.py", "VALUE = 42\n")
    project.write(
        "test_import.py",
        """
        import sys


        async def test_imports_a_fresh_module():
            assert "lh_fresh_module" not in sys.modules
            import lh_fresh_module

            assert lh_fresh_module.VALUE == 42
        """,
    )
    result = project.run("--loophound")
    result.assert_outcomes(passed=1)
