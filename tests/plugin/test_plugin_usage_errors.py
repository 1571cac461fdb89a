"""Bad options and ini values stop pytest with a usage error naming key, value and choices."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from plugin_checks import Project

CASES = [
    pytest.param(
        ["--loophound-mode=loud"],
        [],
        "ERROR: loophound: invalid value for --loophound-mode / loophound_mode: 'loud'; "
        "valid values: fail, warn, off",
        id="mode",
    ),
    pytest.param(
        ["--loophound-threshold=abc"],
        [],
        "ERROR: loophound: invalid value for threshold: 'abc'; expected a number from "
        "0.001 to 3600. (as --loophound-<key> or ini loophound_<key>)",
        id="threshold",
    ),
    pytest.param(
        ["--loophound-allow=nonsense"],
        [],
        "ERROR: loophound: invalid value for allow (from --loophound-allow / loophound_allow): "
        "'nonsense'; expected rules of the form KIND:VALUE with KIND one of operation, "
        "module, function, path *",
        id="allow",
    ),
    pytest.param(
        ["--loophound-detectors=radar"],
        [],
        "ERROR: loophound: invalid value for detectors: 'radar'; expected a list drawn from "
        "audit, patches, watchdog, callbacks. *",
        id="detectors",
    ),
    pytest.param(
        [],
        ["loophound_threshold = -1"],
        "ERROR: loophound: invalid value for threshold: '-1'; expected a number from "
        "0.001 to 3600. *",
        id="ini-threshold",
    ),
    pytest.param(
        [],
        ["loophound_mode = loud"],
        "ERROR: loophound: invalid value for --loophound-mode / loophound_mode: 'loud'; "
        "valid values: fail, warn, off",
        id="ini-mode",
    ),
]


@pytest.mark.parametrize(("args", "ini", "message"), CASES)
def test_bad_value_is_a_usage_error(
    project: Project, args: list[str], ini: list[str], message: str
) -> None:
    """pytest exits with USAGE_ERROR and one message naming key, bad value and choices."""
    project.ini(*ini)
    project.write("test_nothing.py", "def test_nothing():\n    pass\n")
    result = project.run("--loophound", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR: ")]
    assert len(errors) == 1, result.stderr.str()
    pytest.LineMatcher(errors).fnmatch_lines([message])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_bad_ini_switch_is_a_usage_error(project: Project) -> None:
    """An ini value of loophound that is not a truth value stops pytest naming key and choices."""
    project.ini("loophound = maybe")
    project.write("test_nothing.py", "def test_nothing():\n    pass\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR: ")]
    assert errors == [
        (
            "ERROR: loophound: invalid value for the ini key loophound (invalid truth value "
            "'maybe'); "
            "valid values: true, false (or 1/0, yes/no, on/off)"
        )
    ]
