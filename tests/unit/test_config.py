"""Configuration: every key is validated, from keywords and from LOOPHOUND_* variables."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import loophound
from helpers import primitives_now
from loophound import ConfigurationError

ORIGINALS: dict[str, object] = {
    "time.sleep": time.sleep,
    "socket.socket.recv": socket.socket.recv,
    "threading.Event.wait": threading.Event.wait,
    "select.select": select.select,
    "os.read": os.read,
}


def current_primitives() -> dict[str, object]:
    """Return the objects the names of ``ORIGINALS`` point at right now."""
    return primitives_now()


def assert_nothing_installed() -> None:
    """No guard is active and every watched primitive is the original."""
    assert loophound.active_guard() is None
    now = current_primitives()
    for name, original in ORIGINALS.items():
        assert now[name] is original, name


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without any LOOPHOUND_* variable from the outer environment."""
    for name in list(os.environ):
        if name.startswith("LOOPHOUND_"):
            monkeypatch.delenv(name)


# (key, bad value, what the message shows as the bad value, a fragment of the valid choices)
KWARG_CASES: list[tuple[str, object, str, str]] = [
    ("enabled", 2, "2", "true or false"),
    ("enabled", "maybe", "'maybe'", "true or false"),
    ("threshold", "fast", "'fast'", "a number from 0.001 to 3600"),
    ("threshold", 0, "0", "a number from 0.001 to 3600"),
    ("threshold", float("nan"), "nan", "a number from 0.001 to 3600"),
    ("threshold", 3601, "3601", "a number from 0.001 to 3600"),
    ("mode", 3, "3", "one of report, raise"),
    ("mode", "fast", "'fast'", "one of report, raise"),
    ("sinks", 5, "5", "a list of strings"),
    ("sinks", ["stdout"], "'stdout'", "warnings, logging, jsonl"),
    ("jsonl", 5, "5", "a file path"),
    ("on_event", 3, "3", "a callable"),
    ("detectors", 5, "5", "a list of strings"),
    ("detectors", ["sampler"], "'sampler'", "audit, patches"),
    ("allow", 5, "5", "a list of strings"),
    ("allow", ["sleep"], "'sleep'", "KIND one of operation, module, function, path"),
    ("allow", ["colour:red"], "'colour:red'", "KIND one of operation, module, function, path"),
    ("imports", 1, "1", "one of quiet, incident, ignore"),
    ("imports", "loud", "'loud'", "one of quiet, incident, ignore"),
    ("max_frames", 1.5, "1.5", "an integer from 1 to 1000"),
    ("max_frames", 0, "0", "an integer from 1 to 1000"),
    ("rate_limit", "many", "'many'", "an integer from 1 to 10000000"),
    ("rate_limit", 0, "0", "an integer from 1 to 10000000"),
    ("rate_window", [], "[]", "a number from 0.001 to 86400"),
    ("rate_window", 0, "0", "a number from 0.001 to 86400"),
    ("queue_size", 2.0, "2.0", "an integer from 1 to 10000000"),
    ("queue_size", -1, "-1", "an integer from 1 to 10000000"),
    ("stack_sample_rate", "half", "'half'", "a number from 0 to 1"),
    ("stack_sample_rate", 1.5, "1.5", "a number from 0 to 1"),
    ("code_roots", 5, "5", "a list of strings"),
    ("code_roots", [""], "['']", "non-empty strings"),
    ("include_modules", 5, "5", "a list of strings"),
    ("include_modules", ["app", 3], "['app', 3]", "non-empty strings"),
    ("exclude_modules", 5, "5", "a list of strings"),
    ("exclude_modules", [" "], "[' ']", "non-empty strings"),
    ("flush_timeout", None, "None", "a number from 0 to 60"),
    ("flush_timeout", 61, "61", "a number from 0 to 60"),
]

# (key, bad raw value, a fragment of the valid choices); the list-of-names keys
# (code_roots, include_modules, exclude_modules) accept any comma-separated text.
ENV_CASES: list[tuple[str, str, str]] = [
    ("enabled", "maybe", "true or false"),
    ("threshold", "fast", "a number from 0.001 to 3600"),
    ("threshold", "0", "a number from 0.001 to 3600"),
    ("threshold", "inf", "a number from 0.001 to 3600"),
    ("mode", "fast", "one of report, raise"),
    ("sinks", "warnings,stdout", "warnings, logging, jsonl"),
    ("jsonl", " ", "a file path"),
    ("detectors", "sampler", "audit, patches"),
    ("allow", "time.sleep", "KIND one of operation, module, function, path"),
    ("imports", "loud", "one of quiet, incident, ignore"),
    ("max_frames", "1.5", "an integer from 1 to 1000"),
    ("max_frames", "1001", "an integer from 1 to 1000"),
    ("rate_limit", "many", "an integer from 1 to 10000000"),
    ("rate_limit", "0", "an integer from 1 to 10000000"),
    ("rate_window", "soon", "a number from 0.001 to 86400"),
    ("rate_window", "0", "a number from 0.001 to 86400"),
    ("queue_size", "big", "an integer from 1 to 10000000"),
    ("queue_size", "0", "an integer from 1 to 10000000"),
    ("stack_sample_rate", "half", "a number from 0 to 1"),
    ("stack_sample_rate", "-0.1", "a number from 0 to 1"),
    ("flush_timeout", "later", "a number from 0 to 60"),
    ("flush_timeout", "-1", "a number from 0 to 60"),
]


@pytest.mark.parametrize(
    ("key", "value", "shown", "choices"),
    KWARG_CASES,
    ids=[f"{c[0]}={c[1]!r}" for c in KWARG_CASES],
)
def test_bad_keyword_value_is_a_configuration_error(
    key: str, value: object, shown: str, choices: str
) -> None:
    """A keyword with a bad type or an out-of-range value raises naming key, value and choices."""
    with pytest.raises(ConfigurationError) as info:
        loophound.install(**{key: value})
    message = str(info.value)
    assert f"for {key}:" in message
    assert shown in message
    assert choices in message
    assert_nothing_installed()


@pytest.mark.parametrize(
    ("key", "raw", "choices"), ENV_CASES, ids=[f"{c[0]}={c[1]!r}" for c in ENV_CASES]
)
def test_bad_environment_value_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, key: str, raw: str, choices: str
) -> None:
    """A bad LOOPHOUND_* value raises naming the key, the variable, the value and the choices."""
    variable = "LOOPHOUND_" + key.upper()
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ConfigurationError) as info:
        loophound.install(sinks=())
    message = str(info.value)
    assert key in message
    assert variable in message
    assert choices in message
    bad = "stdout" if key == "sinks" else raw  # a list names the one bad element
    assert repr(bad) in message
    assert_nothing_installed()


def test_unknown_keyword_is_a_configuration_error() -> None:
    """An unknown keyword raises naming it and listing the valid settings."""
    with pytest.raises(ConfigurationError) as info:
        loophound.install(treshold=0.2)
    message = str(info.value)
    assert "treshold" in message
    assert "threshold" in message.split("valid settings are", 1)[1]
    assert "max_frames" in message
    assert_nothing_installed()


def test_unknown_environment_variable_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unknown LOOPHOUND_FOO variable raises naming it and listing the valid variables."""
    monkeypatch.setenv("LOOPHOUND_FOO", "1")
    with pytest.raises(ConfigurationError) as info:
        loophound.install(sinks=())
    message = str(info.value)
    assert "LOOPHOUND_FOO" in message
    assert "LOOPHOUND_THRESHOLD" in message
    assert_nothing_installed()


def test_on_event_cannot_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOOPHOUND_ON_EVENT is unknown: a callable can only be given from code."""
    monkeypatch.setenv("LOOPHOUND_ON_EVENT", "print")
    with pytest.raises(ConfigurationError, match="LOOPHOUND_ON_EVENT"):
        loophound.install(sinks=())
    assert_nothing_installed()


def test_jsonl_in_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    """A jsonl path whose directory does not exist raises naming key, path and directory."""
    path = str(tmp_path / "missing" / "events.jsonl")
    with pytest.raises(ConfigurationError) as info:
        loophound.install(jsonl=path)
    message = str(info.value)
    assert "jsonl" in message
    assert repr(path) in message
    assert str(tmp_path / "missing") in message
    assert not (tmp_path / "missing").exists()
    assert_nothing_installed()


def test_jsonl_in_a_missing_directory_from_the_environment_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """LOOPHOUND_JSONL in a missing directory raises naming the variable and the path."""
    path = str(tmp_path / "missing" / "events.jsonl")
    monkeypatch.setenv("LOOPHOUND_JSONL", path)
    with pytest.raises(ConfigurationError) as info:
        loophound.install()
    message = str(info.value)
    assert "LOOPHOUND_JSONL" in message
    assert repr(path) in message
    assert_nothing_installed()


def test_jsonl_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    """A jsonl path naming a directory raises instead of failing on the dispatcher thread."""
    with pytest.raises(ConfigurationError, match="not a directory"):
        loophound.install(jsonl=str(tmp_path))
    assert_nothing_installed()


def test_jsonl_sink_without_a_path_is_an_error() -> None:
    """Naming the jsonl sink without a jsonl path raises and says which setting is missing."""
    with pytest.raises(ConfigurationError, match="jsonl="):
        loophound.install(sinks=["jsonl"])
    assert_nothing_installed()


def test_bad_settings_stop_guard_and_capture_too() -> None:
    """guard() and capture() validate like install(): nothing is patched after the error."""
    with pytest.raises(ConfigurationError, match="mode"), loophound.guard(mode="loud"):
        pass  # pragma: no cover - never entered
    assert_nothing_installed()
    with pytest.raises(ConfigurationError, match="rate_limit"), loophound.capture(rate_limit=-3):
        pass  # pragma: no cover - never entered
    assert_nothing_installed()


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A keyword beats the same LOOPHOUND_* variable; variables fill in the other keys."""
    monkeypatch.setenv("LOOPHOUND_THRESHOLD", "0.2")
    monkeypatch.setenv("LOOPHOUND_MODE", "raise")
    monkeypatch.setenv("LOOPHOUND_MAX_FRAMES", "7")
    monkeypatch.setenv("LOOPHOUND_SINKS", "warnings, logging")
    guard = loophound.install(threshold=0.5, mode="report")
    try:
        assert guard.config.threshold == 0.5
        assert guard.config.mode == "report"
        assert guard.config.max_frames == 7
        assert guard.config.sinks == ("warnings", "logging")
    finally:
        guard.uninstall()
    assert_nothing_installed()


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every LOOPHOUND_* variable is turned into the typed value of its key."""
    values = {
        "ENABLED": "yes",
        "THRESHOLD": "0.25",
        "MODE": "raise",
        "SINKS": "",
        "JSONL": str(tmp_path / "e.jsonl"),
        "DETECTORS": "patches",
        "ALLOW": "operation:time.sleep, module:app.legacy",
        "IMPORTS": "ignore",
        "MAX_FRAMES": "12",
        "RATE_LIMIT": "5",
        "RATE_WINDOW": "2.5",
        "QUEUE_SIZE": "100",
        "STACK_SAMPLE_RATE": "0.5",
        "CODE_ROOTS": "/srv/app,/srv/lib",
        "INCLUDE_MODULES": "app",
        "EXCLUDE_MODULES": "app.vendor",
        "FLUSH_TIMEOUT": "0",
    }
    for name, raw in values.items():
        monkeypatch.setenv("LOOPHOUND_" + name, raw)
    guard = loophound.install()
    try:
        config = guard.config
        expected: dict[str, Any] = {
            "enabled": True,
            "threshold": 0.25,
            "mode": "raise",
            "sinks": (),
            "jsonl": str(tmp_path / "e.jsonl"),
            "detectors": ("patches",),
            "allow": ("operation:time.sleep", "module:app.legacy"),
            "imports": "ignore",
            "max_frames": 12,
            "rate_limit": 5,
            "rate_window": 2.5,
            "queue_size": 100,
            "stack_sample_rate": 0.5,
            "code_roots": ("/srv/app", "/srv/lib"),
            "include_modules": ("app",),
            "exclude_modules": ("app.vendor",),
            "flush_timeout": 0.0,
        }
        for key, value in expected.items():
            assert getattr(config, key) == value, key
        assert config.output_sinks() == ("jsonl",)
    finally:
        guard.uninstall()
    assert_nothing_installed()


def test_enabled_zero_in_the_environment_gives_an_inert_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LOOPHOUND_ENABLED=0 makes install() return a guard that patched nothing."""
    monkeypatch.setenv("LOOPHOUND_ENABLED", "0")
    guard = loophound.install(sinks=())
    assert not guard.installed
    assert guard.config.enabled is False
    assert_nothing_installed()
    assert guard.flush() is True
    guard.uninstall()  # harmless on an inert guard
    again = loophound.install(sinks=())  # an inert guard does not block another install
    assert not again.installed
    assert_nothing_installed()


def test_enabled_false_keyword_gives_an_inert_guard() -> None:
    """install(enabled=False) patches nothing, and capture(enabled=False) collects nothing."""
    guard = loophound.install(enabled=False)
    assert not guard.installed
    assert_nothing_installed()
    with loophound.capture(enabled=False, sinks=()) as events:
        assert_nothing_installed()
        time.sleep(0)
    assert list(events) == []


def test_settings_are_validated_before_anything_is_patched_on_every_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One bad key among good ones still leaves nothing patched, and a retry then works."""
    monkeypatch.setenv("LOOPHOUND_QUEUE_SIZE", "nope")
    with pytest.raises(ConfigurationError, match="LOOPHOUND_QUEUE_SIZE"):
        loophound.install(sinks=(), threshold=0.3, allow=["operation:time.sleep"])
    assert_nothing_installed()
    monkeypatch.delenv("LOOPHOUND_QUEUE_SIZE")
    guard = loophound.install(sinks=())
    try:
        assert guard.installed
        assert loophound.active_guard() is guard
        assert time.sleep is not ORIGINALS["time.sleep"]
    finally:
        guard.uninstall()
    assert_nothing_installed()
