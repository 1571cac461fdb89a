"""Bad input everywhere stops loophound with a clear error, and nothing is patched.

Every setting (from loophound._config's validator table, see bad_values.py) is fed a
wrong type, an out-of-range number, an unknown choice, an unusable path, through
``install(**kw)``, ``LoophoundMiddleware(app, **kw)``, ``settings.LOOPHOUND`` and the
``LOOPHOUND_*`` variables; every argument of ``loophound demo/report/run`` and every
``--loophound-*`` option and ini key of the pytest plugin likewise. The error names
the key, the value and the valid choices; the CLI exits 2, pytest with a usage error
(4); and afterwards no primitive is patched, no loophound thread runs and no loophound
module was imported by the failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bad_values import BOGUS, Bad, code_only_variables, environment_cases, keyword_cases

import loophound
import loophound.cli
import loophound.run
from helpers import primitives_now
from loophound import ConfigurationError, pytest_plugin
from loophound._config import _VALIDATORS
from loophound.asgi import LoophoundMiddleware
from loophound.detectors import audit, patches

HERE = Path(__file__).resolve().parent
ORIGINALS = primitives_now()
HANDLE_RUN = asyncio.events.Handle._run
#: A directory for the path cases; it exists while the tests run (this file's own).
SCRATCH = str(HERE)
KEYWORD_CASES = keyword_cases(SCRATCH)
ENVIRONMENT_CASES = environment_cases(SCRATCH)
#: Upper bound of a subprocess of this file.
SUBPROCESS_BOUND = 60


def loophound_modules() -> set[str]:
    """Return the names of loophound's modules imported in this process."""
    return {name for name in sys.modules if name == "loophound" or name.startswith("loophound.")}


def child_processes() -> list[int]:
    """Return the pids of this process's children (Linux /proc)."""
    found: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children", encoding="ascii") as file:
                found += [int(pid) for pid in file.read().split()]
        except OSError:
            continue
    return found


def assert_untouched(modules_before: set[str]) -> None:
    """Nothing installed, patched, started or imported by loophound since ``modules_before``."""
    assert loophound.active_guard() is None
    assert primitives_now() == ORIGINALS  # time.sleep among them
    assert asyncio.events.Handle._run is HANDLE_RUN
    assert patches._recorder is None
    assert audit._recorder is None
    assert [t.name for t in threading.enumerate() if t.name.startswith("loophound")] == []
    assert loophound_modules() == modules_before


def assert_names(message: str, *fragments: str) -> None:
    """The message contains every fragment (the key, the value, the valid choices)."""
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that is never called."""
    raise AssertionError("the app must not be called")


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Load what a valid install and middleware load, so that failures are compared to it."""
    loophound.install(sinks=()).uninstall()
    LoophoundMiddleware(app)


@pytest.fixture
def before() -> Iterator[set[str]]:
    """loophound's modules before the test; the test ends with nothing touched."""
    modules = loophound_modules()
    yield modules
    assert_untouched(modules)


# -- install(), the middleware, LOOPHOUND_* ---------------------------------------------


def test_every_setting_has_bad_keyword_cases() -> None:
    """bad_values.py derives at least three bad values for each key of the validator table."""
    per_key = {key: sum(c.key == key for c in KEYWORD_CASES) for key in _VALIDATORS}
    assert all(count >= 3 for count in per_key.values()), per_key


@pytest.mark.parametrize("bad", KEYWORD_CASES, ids=[c.id for c in KEYWORD_CASES])
def test_a_bad_keyword_stops_install(bad: Bad, before: set[str]) -> None:
    """install(key=bad) raises ConfigurationError naming key, value and choices; nothing patched."""
    with pytest.raises(ConfigurationError) as info:
        loophound.install(**{"sinks": (), bad.key: bad.value})
    assert_names(str(info.value), f"for {bad.key}:", bad.shown, bad.choices)


@pytest.mark.parametrize("bad", KEYWORD_CASES, ids=[c.id for c in KEYWORD_CASES])
def test_a_bad_keyword_stops_the_middleware(bad: Bad, before: set[str]) -> None:
    """LoophoundMiddleware(app, key=bad) raises at construction; nothing is patched."""
    with pytest.raises(ConfigurationError) as info:
        LoophoundMiddleware(app, **{bad.key: bad.value})
    assert_names(str(info.value), f"for {bad.key}:", bad.shown, bad.choices)


@pytest.mark.parametrize("bad", ENVIRONMENT_CASES, ids=[c.id for c in ENVIRONMENT_CASES])
def test_a_bad_variable_stops_install_and_the_middleware(
    bad: Bad, before: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOOPHOUND_KEY=bad stops install() and the middleware naming variable, value, choices."""
    monkeypatch.setenv(bad.key, str(bad.value))
    with pytest.raises(ConfigurationError) as info:
        loophound.install(sinks=())
    assert_names(str(info.value), f"(from {bad.key}):", bad.shown, bad.choices)
    with pytest.raises(ConfigurationError) as info:
        LoophoundMiddleware(app)
    assert_names(str(info.value), f"(from {bad.key}):", bad.shown, bad.choices)


@pytest.mark.parametrize("variable", ["LOOPHOUND_TRESHOLD", "LOOPHOUND_", *code_only_variables()])
def test_an_unknown_variable_stops_install_listing_the_valid_ones(
    variable: str, before: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt or code-only LOOPHOUND_* variable is refused, the valid names listed."""
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ConfigurationError) as info:
        loophound.install(sinks=())
    assert_names(str(info.value), f"unknown setting {variable} (from environment)")
    assert_names(str(info.value), "LOOPHOUND_THRESHOLD", "LOOPHOUND_JSONL")
    for code_only in code_only_variables():
        assert code_only not in str(info.value).split("valid settings are", 1)[1]


def test_an_unknown_keyword_stops_install_and_the_middleware(before: set[str]) -> None:
    """install(treshold=...) and the middleware refuse an unknown key, listing every valid key."""
    for make in (lambda: loophound.install(treshold=0.2), lambda: LoophoundMiddleware(app, x=1)):
        with pytest.raises(ConfigurationError) as info:
            make()
        valid = str(info.value).split("valid settings are", 1)[1]
        assert_names(str(info.value), "unknown setting")
        assert all(key in valid for key in _VALIDATORS)


def unopenable(tmp_path: Path) -> str:
    """Return a path every check accepts but that cannot be opened: a symlink to itself."""
    path = tmp_path / "loop.jsonl"
    path.symlink_to(path)
    return str(path)


def test_a_jsonl_path_that_cannot_be_opened_stops_install(tmp_path: Path, before: set[str]) -> None:
    """A jsonl path that passes the checks but fails to open is a ConfigurationError at install."""
    path = unopenable(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        loophound.install(sinks=(), jsonl=path)
    assert_names(str(info.value), "for jsonl:", repr(path), "cannot be opened for append")


def test_a_jsonl_path_with_a_nul_byte_is_a_configuration_error(before: set[str]) -> None:
    """install(jsonl='a\\x00b') raises ConfigurationError naming jsonl, not os.open's ValueError."""
    with pytest.raises(ConfigurationError) as info:
        loophound.install(sinks=(), jsonl="events\x00.jsonl")
    assert_names(str(info.value), "for jsonl:", repr("events\x00.jsonl"))


def test_a_jsonl_fifo_without_reader_does_not_hang_install(tmp_path: Path) -> None:
    """install(jsonl=FIFO) with no reader is refused at once instead of blocking in open()."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    code = f"import loophound; loophound.install(sinks=(), jsonl={str(fifo)!r}).uninstall()"
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        process.wait(3)  # ten times what a healthy install() takes here, interpreter included
        blocked = False
    except subprocess.TimeoutExpired:
        blocked = True
        # A reader lets the blocked open() return, so the process ends by itself.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            process.wait(SUBPROCESS_BOUND)
        finally:
            os.close(reader)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(SUBPROCESS_BOUND)
        assert process.stderr is not None
        stderr = process.stderr.read().decode()
        process.stderr.close()
    assert not blocked, "install() blocked in open() until the FIFO got a reader"
    assert process.returncode == 1
    assert_names(stderr, "ConfigurationError", "for jsonl:", repr(str(fifo)))


LEAK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.modules["opentelemetry"] = None  # as if it were not installed: the otel sink fails
    import loophound

    def open_files():
        found = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                found.add(os.readlink(f"/proc/self/fd/{{fd}}"))
            except OSError:  # the descriptor listdir itself used
                pass
        return found

    before = open_files()
    try:
        loophound.install(sinks=["jsonl", "otel"], jsonl={path!r})
    except loophound.ConfigurationError as exc:
        assert "otel" in str(exc), exc
    print(sorted(path for path in open_files() - before if path.endswith(".jsonl")))
    """
)


def test_an_install_that_fails_on_a_later_sink_leaves_no_file_open(tmp_path: Path) -> None:
    """install(sinks=["jsonl", "otel"]) failing on otel closes the jsonl file it had opened."""
    code = LEAK_SCRIPT.format(path=str(tmp_path / "events.jsonl"))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_BOUND,
        check=True,
    )
    assert done.stdout.strip() == "[]"


# -- settings.LOOPHOUND --------------------------------------------------------------------

SETTINGS_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {here!r})
    import django
    from django.conf import settings

    settings.configure(ROOT_URLCONF=__name__, LOOPHOUND={{}})
    urlpatterns = []
    django.setup()

    import loophound
    from loophound.asgi import LoophoundMiddleware
    from bad_values import keyword_cases

    original_sleep = time.sleep

    async def app(scope, receive, send):
        pass

    LoophoundMiddleware(app)  # loads what a valid middleware loads
    modules = {{m for m in sys.modules if m.startswith("loophound")}}
    results = []
    for bad in keyword_cases({scratch!r}):
        settings.LOOPHOUND = {{bad.key: bad.value}}
        try:
            LoophoundMiddleware(app)
            message = None
        except loophound.ConfigurationError as exc:
            message = str(exc)
        untouched = (
            loophound.active_guard() is None
            and time.sleep is original_sleep
            and {{m for m in sys.modules if m.startswith("loophound")}} == modules
        )
        results.append([bad.key, bad.shown, bad.choices, message, untouched])
    print(json.dumps(results))
    """
)


def test_bad_settings_loophound_values_stop_the_middleware() -> None:
    """Each bad value in Django's settings.LOOPHOUND stops the middleware, naming its source."""
    code = SETTINGS_SCRIPT.format(here=str(HERE), scratch=SCRATCH)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPHOUND_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_BOUND,
        check=True,
    )
    results = json.loads(done.stdout)
    assert len(results) == len(KEYWORD_CASES)
    for key, shown, choices, message, untouched in results:
        assert message is not None, f"settings.LOOPHOUND = {{{key!r}: {shown}}} was accepted"
        assert_names(message, f"for {key} (from settings.LOOPHOUND):", shown, choices)
        assert untouched, message


# -- the command line ------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``loophound ARGV`` in this process; return its exit status and stderr."""
    try:
        status: object = loophound.cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    assert isinstance(status, int)
    return status, capsys.readouterr().err


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, before: set[str]) -> Iterator[Path]:
    """Nothing the command line might start can start: no demo server, no exec."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"started with bad input: {args}")

    monkeypatch.setattr(loophound.cli, "demo", refuse)
    monkeypatch.setattr(loophound.run.os, "execve", refuse)
    monkeypatch.chdir(tmp_path)
    children = child_processes()
    yield tmp_path
    assert child_processes() == children


#: argparse's words before the valid choices (how it quotes them varies across versions).
CHOOSE = ["invalid choice", "choose from"]


def _cli_cases() -> list[Any]:
    log = "events.jsonl"  # written by the test before it runs
    missing = os.path.join("missing", "out.txt")
    rows: list[tuple[list[str], list[str]]] = [
        (["demo", "--port", "http"], ["--port", "'http'", "an integer from 0 to 65535"]),
        (["demo", "--port", "-1"], ["--port", "-1", "an integer from 0 to 65535"]),
        (["demo", "--port", "65536"], ["--port", "65536", "an integer from 0 to 65535"]),
        (["demo", "--requests", "0"], ["--requests", "'0'", "an integer from 1 to 1000"]),
        (["demo", "--requests", "1001"], ["--requests", "'1001'", "an integer from 1 to 1000"]),
        (["demo", "--requests", "x"], ["--requests", "'x'", "an integer from 1 to 1000"]),
        (["demo", "--out", "."], ["--out", "'.'", "a directory"]),
        (["demo", "--out", missing], ["--out", repr(missing), "does not exist"]),
        (["demo", "--otel", BOGUS], ["--otel", BOGUS, *CHOOSE, "console", "otlp", "prometheus"]),
        (["demo", "--keep-running=yes"], ["--keep-running", "'yes'"]),
        (["demo", "--bogus"], ["--bogus"]),
        (["report"], ["EVENTS.jsonl", "required"]),
        (["report", "nowhere.jsonl"], ["nowhere.jsonl"]),
        (["report", log, "--by", BOGUS], ["--by", BOGUS, *CHOOSE, "culprit", "route", "operation"]),
        (["report", log, "--since", "yesterday"], ["--since", "'yesterday'", "30m, 2h, 1d"]),
        (["report", log, "--top", "0"], ["--top", "'0'", "an integer from 1 to 100000"]),
        (["report", log, "--top", "100001"], ["--top", "'100001'", "from 1 to 100000"]),
        (["report", log, "--top", "x"], ["--top", "'x'", "an integer from 1 to 100000"]),
        (["report", log, "--format", BOGUS], ["--format", BOGUS, *CHOOSE, "table", "json", "csv"]),
        (["report", log, "--html", "."], ["--html", "'.'", "a directory"]),
        (["report", log, "--html", missing], ["--html", repr(missing), "does not exist"]),
        (["report", log, "--html", log], ["refusing", repr(log), "one of the logs read"]),
        (["report", log, "--folded", "."], ["--folded", "'.'", "a directory"]),
        (["report", log, "--folded", missing], ["--folded", repr(missing), "does not exist"]),
        (["report", log, "--folded", log], ["refusing", repr(log), "one of the logs read"]),
        (["run"], ["missing the server command"]),
        (["run", "--"], ["missing the server command"]),
        (["run", "--", "gunicorn", "app:app"], ["'gunicorn'", "uvicorn, hypercorn, daphne"]),
        (["run", "--", "uvicorn", "app:app"], ["cannot find 'uvicorn' on PATH"]),
        ([BOGUS], [BOGUS, "demo", "run", "report"]),
    ]
    return [pytest.param(argv, fragments, id=" ".join(argv)) for argv, fragments in rows]


CLI_CASES = _cli_cases()


@pytest.mark.parametrize(("argv", "fragments"), CLI_CASES)
def test_a_bad_argument_exits_2_naming_it(
    argv: list[str],
    fragments: list[str],
    cli: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """loophound ARGV exits 2 with a message naming the argument, the value and the choices."""
    (cli / "events.jsonl").write_text("", encoding="utf-8")
    monkeypatch.setenv("PATH", str(cli))  # no server is found on PATH
    status, stderr = run_cli(argv, capsys)
    assert status == 2
    assert_names(stderr, *fragments)
    assert sorted(p.name for p in cli.iterdir()) == ["events.jsonl"]  # nothing was written


def test_every_command_line_option_has_a_bad_input_case() -> None:
    """Each option of demo, report and run appears in a case above (new options too)."""
    parser = loophound.cli._parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    covered = {word for case in CLI_CASES for words in case.values for word in words}
    covered |= {word.split("=", 1)[0] for word in covered}
    missing = []
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            if not set(names) & covered and name != "run":
                missing.append(f"{name} {names}")
    assert missing == []


@pytest.mark.parametrize("bad", ENVIRONMENT_CASES, ids=[c.id for c in ENVIRONMENT_CASES])
def test_loophound_run_with_a_bad_variable_exits_2_naming_it(
    bad: Bad,
    cli: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """loophound run -- uvicorn ... with a bad LOOPHOUND_* variable exits 2 and execs nothing."""
    monkeypatch.setenv(bad.key, str(bad.value))
    status, stderr = run_cli(["run", "--", "uvicorn", "app:application"], capsys)
    assert status == 2
    assert_names(stderr, f"(from {bad.key}):", bad.shown, bad.choices)


def test_the_installed_command_exits_2_too(tmp_path: Path) -> None:
    """The real `loophound` entry point, in a process of its own, exits 2 on a bad argument."""
    done = subprocess.run(
        [sys.executable, "-m", "loophound.cli", "report", str(tmp_path / "none.jsonl")],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_BOUND,
        check=False,
    )
    assert done.returncode == 2
    assert "none.jsonl" in done.stderr


# -- the pytest plugin ------------------------------------------------------------------


class _Options:
    """Records what the plugin's pytest_addoption registers."""

    def __init__(self) -> None:
        self.flags: list[str] = []
        self.ini: list[str] = []

    def getgroup(self, *_args: object, **_kwargs: object) -> _Options:
        return self

    def addoption(self, *names: str, **_kwargs: object) -> None:
        self.flags.append(names[0])

    def addini(self, name: str, *_args: object, **_kwargs: object) -> None:
        self.ini.append(name)


def plugin_options() -> _Options:
    """Return the plugin's command-line options and ini keys."""
    options = _Options()
    pytest_plugin.pytest_addoption(options)  # type: ignore[arg-type]
    return options


def _pytest_cases() -> list[Any]:
    """Bad values per option: the setting's bad texts, and the plugin's own mode and flag."""
    rows: list[tuple[str, str, list[str]]] = []
    for flag in plugin_options().flags:
        name = flag.removeprefix("--loophound").removeprefix("-")
        if name == "":
            continue  # the on/off flag: see the "loophound = maybe" row below
        if name == "mode":
            rows.append((name, "loud", ["mode", "'loud'", "fail, warn, off"]))
            continue
        variable = "LOOPHOUND_" + name.upper()
        texts = [c for c in ENVIRONMENT_CASES if c.key == variable and c.value != ""]
        assert texts, f"no bad value for --loophound-{name}"
        rows += [(name, str(c.value), [f"for {name}", c.shown, c.choices]) for c in texts]
    params = []
    for name, value, fragments in rows:
        params.append(pytest.param([f"--loophound-{name}={value}"], [], fragments, id=f"{name}"))
        lines = [f"loophound_{name} = {value}"]
        params.append(pytest.param([], lines, fragments, id=f"ini-{name}"))
    params.append(pytest.param(["--loophound=yes"], [], ["--loophound", "'yes'"], id="flag"))
    params.append(pytest.param([], ["loophound = maybe"], ["'maybe'"], id="ini-flag"))
    params.append(
        pytest.param(["--loophound-treshold=0.2"], [], ["--loophound-treshold"], id="unknown")
    )
    return params


PYTEST_CASES = _pytest_cases()


def test_every_plugin_option_has_bad_input_cases() -> None:
    """Each --loophound-* option and loophound_* ini key appears in a case above."""
    options = plugin_options()
    flags = {case.values[0][0].split("=", 1)[0] for case in PYTEST_CASES if case.values[0]}
    ini = {case.values[1][0].split(" = ", 1)[0] for case in PYTEST_CASES if case.values[1]}
    assert set(options.flags) <= flags
    assert set(options.ini) == ini


def run_pytest(pytester: pytest.Pytester, args: list[str], ini: list[str]) -> pytest.RunResult:
    """Run pytest with the plugin on in this process (it fails at configure: no guard made)."""
    pytester.makeini("[pytest]\n" + "\n".join(ini) + "\n")
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    switch = [] if any(a.startswith("--loophound=") for a in args) else ["--loophound"]
    if any(line.startswith("loophound =") for line in ini):
        switch = []  # the ini key turns it on, or fails
    return pytester.runpytest_inprocess(*switch, "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize(("args", "ini", "fragments"), PYTEST_CASES)
def test_a_bad_plugin_option_is_a_usage_error(
    pytester: pytest.Pytester,
    args: list[str],
    ini: list[str],
    fragments: list[str],
    before: set[str],
) -> None:
    """A bad --loophound-* option or ini key stops pytest with exit 4 naming key and value."""
    result = run_pytest(pytester, args, ini)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert_names(result.stderr.str(), *fragments)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_a_plugin_jsonl_that_cannot_be_opened_is_a_usage_error(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """--loophound-jsonl pointing at an unopenable path stops pytest with exit 4."""
    path = unopenable(tmp_path)
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--loophound", f"--loophound-jsonl={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert_names(result.stderr.str(), "--loophound-jsonl", repr(path), "cannot be opened")
