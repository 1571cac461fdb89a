"""Turning the plugin on, and every option as a flag and as an ini key (the flag wins)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_checks import Project, expect_report

BLOCKS = """
import time


async def test_blocks():
    time.sleep(0.01)  # culprit:blocks
"""


def test_inactive_by_default_and_on_with_the_flag(project: Project) -> None:
    """Without --loophound a blocking test passes silently; with it the test fails."""
    project.ini()
    project.write("test_blocks.py", BLOCKS)
    quiet = project.run()
    quiet.assert_outcomes(passed=1)
    assert "loophound:" not in quiet.stdout.str()
    loud = project.run("--loophound")
    loud.assert_outcomes(failed=1)
    loud.stdout.fnmatch_lines(["loophound: threshold=0.1 mode=fail *"])
    expect_report(
        loud,
        "test_blocks",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        "loophound: time.sleep blocked the event loop for * ms at "
        f"{project.location('test_blocks.py', 'culprit:blocks')} in test_blocks",
    )


def test_ini_switch_turns_it_on(project: Project) -> None:
    """The ini key loophound = true turns the plugin on without any flag."""
    project.ini("loophound = true")
    project.write("test_blocks.py", BLOCKS)
    result = project.run()
    result.assert_outcomes(failed=1)
    expect_report(
        result,
        "test_blocks",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        "loophound: time.sleep blocked the event loop for * ms at "
        f"{project.location('test_blocks.py', 'culprit:blocks')} in test_blocks",
    )


OPTIONS_TESTS = """
import os
import time


async def test_sleep():
    time.sleep(0.01)  # culprit:sleep


async def test_listdir():
    os.listdir(".")  # culprit:listdir


async def test_scandir():
    with os.scandir("."):  # culprit:scandir
        pass


async def test_spin():
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # culprit:spin
        pass
"""


def _loud_records(path: Path) -> list[dict[str, object]]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [r for r in records if not r["quiet"]]


def _culprit(location: str) -> dict[str, object]:
    file, line = location.rsplit(":", 1)
    return {"file": file, "line": int(line)}


def test_every_option_as_ini_key_and_the_command_line_wins(project: Project) -> None:
    """Every option works as its ini key, and each --loophound-* flag overrides its ini key."""
    ini_jsonl = project.path / "ini.jsonl"
    cli_jsonl = project.path / "cli.jsonl"
    project.ini(
        "loophound = true",
        "loophound_threshold = 0.5",
        "loophound_mode = warn",
        "loophound_allow =",
        "    operation:os.listdir",
        "    module:ini_only_rule",
        "loophound_detectors = audit,watchdog,callbacks",
        f"loophound_jsonl = {ini_jsonl}",
    )
    project.write("test_options.py", OPTIONS_TESTS)
    where = {
        m: project.location("test_options.py", f"culprit:{m}")
        for m in ("sleep", "listdir", "scandir", "spin")
    }

    cli = project.run(
        "--loophound-threshold=0.1",
        "--loophound-mode=fail",
        "--loophound-allow=operation:os.scandir",
        "--loophound-detectors=patches,audit,watchdog,callbacks",
        f"--loophound-jsonl={cli_jsonl}",
    )
    # patches on: sleep fails; the ini's allow replaced: listdir fails; 0.3 s > 0.1 s.
    cli.assert_outcomes(passed=1, failed=3)
    cli.stdout.fnmatch_lines(
        [
            (
                "loophound: threshold=0.1 mode=fail detectors=patches,audit,watchdog,callbacks "
                f"allow=operation:os.scandir jsonl={cli_jsonl}"
            )
        ]
    )
    expect_report(
        cli,
        "test_listdir",
        "loophound: the event loop was blocked 1 time during the test",
        "",
        f"loophound: os.listdir(.) blocked the event loop at {where['listdir']} in test_listdir",
    )
    assert not ini_jsonl.exists()
    records = _loud_records(cli_jsonl)
    assert len(records) == 3
    by_operation = {r["operation"]: r for r in records}
    assert by_operation["time.sleep"]["culprit"] == {
        **_culprit(where["sleep"]),
        "function": "test_sleep",
    }
    assert by_operation["os.listdir"]["culprit"] == {
        **_culprit(where["listdir"]),
        "function": "test_listdir",
    }
    (stall,) = [r for r in records if r["kind"] == "stall"]
    assert stall["culprit"] == {**_culprit(where["spin"]), "function": "test_spin"}

    ini = project.run()
    # No patches: sleep unseen; listdir allowed; 0.3 s < 0.5 s; scandir only warns.
    ini.assert_outcomes(passed=4, warnings=1)
    ini.stdout.fnmatch_lines(
        [
            (
                "loophound: threshold=0.5 mode=warn detectors=audit,watchdog,callbacks "
                f"allow=operation:os.listdir,module:ini_only_rule jsonl={ini_jsonl}"
            )
        ]
    )
    ini.stdout.fnmatch_lines(
        [f"  {where['scandir']}: BlockingCallWarning: os.scandir(.) blocked the event loop at *"]
    )
    (record,) = _loud_records(ini_jsonl)
    assert record["operation"] == "os.scandir"
    assert record["culprit"] == {**_culprit(where["scandir"]), "function": "test_scandir"}


def test_inactive_plugin_ignores_loophound_environment_variables(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --loophound, LOOPHOUND_* variables meant for a service do not stop pytest."""
    monkeypatch.setenv("LOOPHOUND_SINKS", "jsonl")  # valid for a service only with LOOPHOUND_JSONL
    project.ini()
    project.write("test_blocks.py", BLOCKS)
    result = project.run()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
