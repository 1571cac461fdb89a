"""Under pytest-xdist each worker judges its own tests and the controller merges the summaries."""

from __future__ import annotations

from plugin_checks import Project, section

TESTS = """
import asyncio
import os
import time

import pytest


def shared():
    time.sleep(0.01)  # culprit:shared

{blocking}
{clean}

@pytest.mark.loophound(allow=["module:unused_marker_module"])
async def test_listdir_allowed_by_the_ini():
    os.listdir(".")
"""


def test_workers_fail_their_own_tests_and_the_controller_merges(project: Project) -> None:
    """Under -n 2, 4 blocking tests fail, 4 clean pass, and the controller merges both summaries."""
    project.ini(
        "loophound = true",
        "loophound_allow =",
        "    operation:os.listdir",
        "    module:unused_ini_module",
    )
    blocking = "\n".join(f"async def test_blocks_{n}():\n    shared()\n\n" for n in range(4))
    clean = "\n".join(
        f"async def test_clean_{n}():\n    await asyncio.sleep(0.01)\n\n" for n in range(4)
    )
    project.write("test_spread.py", TESTS.format(blocking=blocking, clean=clean))
    result = project.run("-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=5, failed=4)
    result.stdout.fnmatch_lines(["created: 2/2 workers"])
    for n in range(4):
        result.stdout.fnmatch_lines([f"FAILED test_spread.py::test_blocks_{n} - loophound*"])
    # xdist hands each worker two of the first four tests: both judged blocking tests.
    workers = {line.split()[0] for line in result.stdout.lines if line.startswith("[gw")}
    assert workers == {"[gw0]", "[gw1]"}
    shared = project.location("test_spread.py", "culprit:shared")
    sites = section(result, "loophound: blocking call sites")
    assert len(sites) == 1
    assert sites[0].startswith("    4x  ")
    assert f" ms max  time.sleep  {shared}  (test_spread.py::test_blocks_" in sites[0]
    assert section(result, "loophound: allow rules that never matched") == [
        "  module:unused_ini_module",
        "  module:unused_marker_module",
    ]


def test_bad_marker_under_xdist_is_reported_without_internal_error(project: Project) -> None:
    """Under -n 2 a bad loophound marker is reported by name, never as an INTERNALERROR."""
    project.ini("loophound = true")
    project.write(
        "test_bad.py",
        """
        import pytest


        @pytest.mark.loophound(mode="loud")
        async def test_bad():
            pass
        """,
    )
    result = project.run("-p", "xdist", "-n", "2")
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output
    assert "invalid mode in the loophound marker on test_bad.py::test_bad: 'loud'" in output
