"""What the run reports beyond the failures: the settings header and the call-site summary."""

from __future__ import annotations

import pytest
from plugin_checks import Project, section


def test_header_and_blocking_call_sites_summary(project: Project) -> None:
    """The header shows the settings; the summary lists each call site once with its count."""
    project.ini()
    project.write(
        "test_sites.py",
        """
        import os
        import time


        def shared():
            time.sleep(0.01)  # culprit:shared


        async def test_first():
            shared()


        async def test_second():
            shared()


        async def test_third():
            shared()
            os.listdir(".")  # culprit:listdir
        """,
    )
    result = project.run("--loophound")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        ["loophound: threshold=0.1 mode=fail detectors=audit,patches,watchdog,callbacks"]
    )
    shared = project.location("test_sites.py", "culprit:shared")
    listdir = project.location("test_sites.py", "culprit:listdir")
    sites = section(result, "loophound: blocking call sites")
    pytest.LineMatcher(sites).fnmatch_lines(
        [
            (
                f"    3x  * ms max  time.sleep  {shared}  (test_sites.py::test_first, "
                "test_sites.py::test_second, test_sites.py::test_third)"
            ),
            f"    1x       0.0 ms max  os.listdir  {listdir}  (test_sites.py::test_third)",
        ],
        consecutive=True,
    )
    assert len(sites) == 2
