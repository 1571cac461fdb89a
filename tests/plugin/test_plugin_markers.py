"""The loophound marker on a test, a class and a module: allow rules, mode warn, mode off."""

from __future__ import annotations

import pytest
from plugin_checks import Project, expect_lines, expect_report, section


def test_markers_on_tests_classes_and_modules(project: Project) -> None:
    """Test, class and module markers apply allow, off and warn (a warning at the culprit)."""
    project.ini()
    project.write(
        "test_module_allow.py",
        """
        import os
        import time

        import pytest

        pytestmark = pytest.mark.loophound(allow=["operation:time.sleep"])


        async def test_module_allows_sleep():
            time.sleep(0.01)


        async def test_module_allows_only_sleep():
            os.listdir(".")  # culprit:module-listdir
        """,
    )
    project.write(
        "test_module_warn.py",
        """
        import time

        import pytest

        pytestmark = pytest.mark.loophound(mode="warn")


        async def test_module_warns():
            time.sleep(0.01)  # culprit:module-warn
        """,
    )
    project.write(
        "test_module_off.py",
        """
        import time

        import pytest

        pytestmark = pytest.mark.loophound(mode="off")


        async def test_module_off():
            time.sleep(0.01)
        """,
    )
    project.write(
        "test_markers.py",
        """
        import time
        import warnings

        import pytest


        @pytest.mark.loophound(allow=["operation:time.sleep"])
        async def test_test_allows():
            time.sleep(0.01)


        @pytest.mark.loophound(mode="warn")
        async def test_test_warns():
            time.sleep(0.01)  # culprit:test-warn


        @pytest.mark.loophound(mode="off")
        async def test_test_off():
            time.sleep(0.01)


        async def test_unmarked_blocks():
            time.sleep(0.01)  # culprit:unmarked


        async def test_other_warning():
            warnings.warn("not loophound's", UserWarning)


        @pytest.mark.loophound(allow=["operation:time.sleep"])
        class TestAllowed:
            async def test_in_allowed_class(self):
                time.sleep(0.01)


        @pytest.mark.loophound(mode="warn")
        class TestWarned:
            async def test_in_warned_class(self):
                time.sleep(0.01)  # culprit:class-warn


        class TestOff:
            pytestmark = pytest.mark.loophound(mode="off")

            async def test_in_off_class(self):
                time.sleep(0.01)
        """,
    )
    result = project.run("--loophound")
    result.assert_outcomes(passed=10, failed=2, warnings=4)
    listdir = project.location("test_module_allow.py", "culprit:module-listdir")
    expect_report(
        result,
        "test_module_allows_only_sleep",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        f"loophound: os.listdir(.) blocked the event loop at {listdir} "
        "in test_module_allows_only_sleep",
    )
    unmarked = project.location("test_markers.py", "culprit:unmarked")
    expect_report(
        result,
        "test_unmarked_blocks",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        f"loophound: time.sleep blocked the event loop for * ms at {unmarked} "
        "in test_unmarked_blocks",
    )
    warned = section(result, "warnings summary")
    for name, marker, function in (
        ("test_module_warn.py", "culprit:module-warn", "test_module_warns"),
        ("test_markers.py", "culprit:test-warn", "test_test_warns"),
        ("test_markers.py", "culprit:class-warn", "TestWarned.test_in_warned_class"),
    ):
        where = project.location(name, marker)
        pytest.LineMatcher(warned).fnmatch_lines(
            [
                (
                    f"  {where}: BlockingCallWarning: time.sleep blocked the event loop for * ms "
                    f"at {where} in {function}"
                )
            ]
        )
    pytest.LineMatcher(warned).fnmatch_lines(["*UserWarning: not loophound's"])
    expect_lines(
        result,
        "FAILED test_markers.py::test_unmarked_blocks - loophound*",
        "FAILED test_module_allow.py::test_module_allows_only_sleep - loophound*",
    )


BAD_MARKERS = [
    pytest.param(
        "mode='loud'",
        [
            (
                "ERROR: loophound: invalid mode in the loophound marker on "
                "test_bad.py::test_bad: 'loud'; valid values: fail, warn, off"
            )
        ],
        id="mode",
    ),
    pytest.param(
        "threshold='soon'",
        ["*invalid value for threshold: 'soon'; expected a number from 0.001 to 3600*"],
        id="threshold",
    ),
    pytest.param(
        "allow=['bogus']",
        [
            (
                "*invalid value for allow (from the loophound marker on test_bad.py::test_bad): "
                "'bogus'; expected rules of the form KIND:VALUE*"
            )
        ],
        id="allow",
    ),
    pytest.param(
        "colour='red'",
        ["*invalid loophound marker on test_bad.py::test_bad*colour*"],
        id="unknown-keyword",
    ),
    pytest.param(
        "0.5",
        ["*invalid loophound marker on test_bad.py::test_bad*0.5*"],
        id="positional",
    ),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_MARKERS)
def test_bad_marker_arguments_are_a_usage_error(
    project: Project, arguments: str, message: list[str]
) -> None:
    """A loophound marker with a bad argument stops pytest with a usage error that names it."""
    project.ini()
    project.write(
        "test_bad.py",
        f"""
        import pytest


        @pytest.mark.loophound({arguments})
        async def test_bad():
            pass
        """,
    )
    result = project.run("--loophound")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(message)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
