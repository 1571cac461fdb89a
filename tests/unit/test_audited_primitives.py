"""The audit detector: file system, processes, DNS, connections and imports on the loop.

Everything is real: files under tmp_path, child processes, DNS of ``localhost``, TCP
on 127.0.0.1 and a tiny HTTP server in a background thread. Each test makes one
blocking call on the loop and checks the one event it yields, at the caller's line.
"""

from __future__ import annotations

import asyncio
import glob
import http.client
import http.server
import importlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import http_server, line_of, loud, one_loud_event, run_captured
from loophound import BlockingCallError, BlockingCallWarning, Event

BOUND = 5.0  # upper bound of a wait that is expected to succeed


def only_event(events: list[Event], operation: str, marker: str, detector: str = "audit") -> Event:
    """Assert ``events`` hold one loud event, for ``operation`` at ``marker``'s line."""
    event = one_loud_event(events, operation, marker, __file__)
    assert event.detectors[0] == detector
    assert set(event.detectors) <= {"audit", "patches"}
    assert event.thread_name == threading.current_thread().name
    if detector == "audit" and not event.primitives:
        assert event.duration is None  # an audit event is a notification, not a call
    return event


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A directory holding one file ``a.txt`` and one subdirectory ``sub`` with a file."""
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("beta", encoding="utf-8")
    return tmp_path


# --- files -------------------------------------------------------------------------


def test_open_for_reading_is_flagged(tree: Path) -> None:
    """open() of a real file for reading is one open event carrying the path."""
    path = str(tree / "a.txt")
    text: list[str] = []

    async def main() -> None:
        with open(path, encoding="utf-8") as handle:  # marker-open-read
            text.append(handle.read())

    event = only_event(run_captured(main), "open", "# marker-open-read")
    assert event.detail == path
    assert text == ["alpha"]


def test_open_for_writing_is_flagged(tree: Path) -> None:
    """open() of a new file for writing is one open event, and the file is written."""
    path = str(tree / "new.txt")

    async def main() -> None:
        with open(path, "w", encoding="utf-8") as handle:  # marker-open-write
            handle.write("written")

    event = only_event(run_captured(main), "open", "# marker-open-write")
    assert event.detail == path
    assert (tree / "new.txt").read_text(encoding="utf-8") == "written"


def test_open_of_a_descriptor_is_not_flagged(tree: Path) -> None:
    """open() of an already open descriptor touches no file system and is no incident."""
    fd = os.open(tree / "a.txt", os.O_RDONLY)

    async def main() -> None:
        with open(fd, encoding="utf-8") as handle:
            handle.read()

    assert run_captured(main) == []


def test_listdir_is_flagged(tree: Path) -> None:
    """os.listdir on the loop is one os.listdir event."""

    async def main() -> None:
        os.listdir(tree)  # marker-listdir

    only_event(run_captured(main), "os.listdir", "# marker-listdir")


def test_scandir_is_flagged(tree: Path) -> None:
    """os.scandir on the loop is one os.scandir event."""
    names: list[str] = []

    async def main() -> None:
        with os.scandir(tree) as entries:  # marker-scandir
            names.extend(entry.name for entry in entries)

    only_event(run_captured(main), "os.scandir", "# marker-scandir")
    assert sorted(names) == ["a.txt", "sub"]


def test_remove_is_flagged(tree: Path) -> None:
    """os.remove on the loop is one os.remove event, and the file is gone."""
    path = str(tree / "a.txt")

    async def main() -> None:
        os.remove(path)  # marker-remove

    only_event(run_captured(main), "os.remove", "# marker-remove")
    assert not os.path.exists(path)


def test_rename_is_flagged(tree: Path) -> None:
    """os.rename on the loop is one os.rename event."""

    async def main() -> None:
        os.rename(tree / "a.txt", tree / "c.txt")  # marker-rename

    only_event(run_captured(main), "os.rename", "# marker-rename")
    assert (tree / "c.txt").exists()


def test_mkdir_is_flagged(tree: Path) -> None:
    """os.mkdir on the loop is one os.mkdir event."""

    async def main() -> None:
        os.mkdir(tree / "made")  # marker-mkdir

    only_event(run_captured(main), "os.mkdir", "# marker-mkdir")
    assert (tree / "made").is_dir()


def test_copyfile_is_one_event(tree: Path) -> None:
    """shutil.copyfile is one event though it opens two files."""

    async def main() -> None:
        shutil.copyfile(tree / "a.txt", tree / "copy.txt")  # marker-copyfile

    only_event(run_captured(main), "shutil.copyfile", "# marker-copyfile")
    assert (tree / "copy.txt").read_text(encoding="utf-8") == "alpha"


def test_copytree_is_one_event(tree: Path) -> None:
    """shutil.copytree is one event though it lists, makes and copies several times."""

    async def main() -> None:
        shutil.copytree(tree / "sub", tree / "sub2")  # marker-copytree

    only_event(run_captured(main), "shutil.copytree", "# marker-copytree")
    assert (tree / "sub2" / "b.txt").read_text(encoding="utf-8") == "beta"


def test_glob_is_flagged(tree: Path) -> None:
    """glob.glob on the loop is one glob.glob event carrying the pattern."""
    pattern = str(tree / "*.txt")
    found: list[str] = []

    async def main() -> None:
        found.extend(glob.glob(pattern))  # marker-glob

    event = only_event(run_captured(main), "glob.glob", "# marker-glob")
    assert event.detail == pattern
    assert found == [str(tree / "a.txt")]


def test_sqlite_connect_is_flagged(tmp_path: Path) -> None:
    """sqlite3.connect to a database file is one sqlite3.connect event."""
    path = str(tmp_path / "db.sqlite")
    connections: list[sqlite3.Connection] = []

    async def main() -> None:
        connections.append(sqlite3.connect(path))  # marker-sqlite

    try:
        events = run_captured(main)
    finally:
        for connection in connections:
            connection.close()
    event = only_event(events, "sqlite3.connect", "# marker-sqlite")
    assert event.detail == path


# --- processes ---------------------------------------------------------------------


def test_subprocess_run_is_one_event() -> None:
    """subprocess.run is one event at the user's line, though it spawns, then waits."""
    results: list[int] = []

    async def main() -> None:
        results.append(subprocess.run(["true"], check=False).returncode)  # marker-run

    event = only_event(run_captured(main), "subprocess.run", "# marker-run")
    assert event.detail == "true"
    assert event.primitives[0] == "subprocess.Popen"
    assert "subprocess.Popen.communicate" in event.primitives
    assert results == [0]


def test_two_calls_are_two_events() -> None:
    """Two subprocess.run calls are two events, each at its own line."""

    async def main() -> None:
        subprocess.run(["true"], check=False)  # marker-run-first
        subprocess.run(["true"], check=False)  # marker-run-second

    found = loud(run_captured(main))
    assert [(e.operation, e.culprit.lineno if e.culprit else 0) for e in found] == [
        ("subprocess.run", line_of("# marker-run-first", __file__)),
        ("subprocess.run", line_of("# marker-run-second", __file__)),
    ]


def test_os_system_is_flagged() -> None:
    """os.system runs a shell and waits: one os.system event naming only the program."""
    codes: list[int] = []

    async def main() -> None:
        codes.append(os.system("true"))  # noqa: S605  # marker-system

    event = only_event(run_captured(main), "os.system", "# marker-system")
    assert event.detail == "true"
    assert codes == [0]


# --- network -----------------------------------------------------------------------


def test_create_connection_is_one_event(listener: socket.socket) -> None:
    """socket.create_connection resolves then connects: one event, named by its first step."""
    address = listener.getsockname()
    clients: list[socket.socket] = []

    async def main() -> None:
        clients.append(socket.create_connection(address, timeout=BOUND))  # marker-create

    try:
        events = run_captured(main)
    finally:
        for client in clients:
            client.close()
    event = only_event(events, "socket.create_connection", "# marker-create")
    assert event.detail == "127.0.0.1"


def test_socket_connect_is_seen_by_the_audit_hook(listener: socket.socket) -> None:
    """With only the audit detector, a blocking connect is one socket.connect event."""
    address = listener.getsockname()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(BOUND)

    async def main() -> None:
        client.connect(address)  # marker-audit-connect

    try:
        events = run_captured(main, detectors=("audit",))
    finally:
        client.close()
    event = only_event(events, "socket.connect", "# marker-audit-connect")
    assert event.detail == f"127.0.0.1:{address[1]}"


@pytest.mark.skipif(sys.version_info < (3, 13), reason="the time.sleep audit event is new in 3.13")
def test_time_sleep_is_seen_by_the_audit_hook() -> None:
    """With only the audit detector, time.sleep is flagged and time.sleep(0) is not."""

    async def main() -> None:
        time.sleep(0)
        time.sleep(0.01)  # marker-audit-sleep

    event = only_event(
        run_captured(main, detectors=("audit",)), "time.sleep", "# marker-audit-sleep"
    )
    assert event.detail == "0.01"


def test_getaddrinfo_of_localhost_is_flagged(listener: socket.socket) -> None:
    """socket.getaddrinfo of localhost is a real DNS lookup: one event naming the host."""
    port = listener.getsockname()[1]
    answers: list[object] = []

    async def main() -> None:
        answers.append(socket.getaddrinfo("localhost", port))  # marker-getaddrinfo

    event = only_event(run_captured(main), "socket.getaddrinfo", "# marker-getaddrinfo")
    assert event.detail == "localhost"
    assert answers


def test_gethostbyname_of_localhost_is_flagged() -> None:
    """socket.gethostbyname of localhost is one socket.gethostbyname event."""
    answers: list[str] = []

    async def main() -> None:
        answers.append(socket.gethostbyname("localhost"))  # marker-gethostbyname

    event = only_event(run_captured(main), "socket.gethostbyname", "# marker-gethostbyname")
    assert event.detail == "localhost"
    assert answers[0].startswith("127.")


def test_http_connection_connect_is_one_event(listener: socket.socket) -> None:
    """HTTPConnection.connect to a 127.0.0.1 listener is one http.client.connect event."""
    port = listener.getsockname()[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)

    async def main() -> None:
        connection.connect()  # marker-http-connect

    try:
        events = run_captured(main)
    finally:
        connection.close()
    event = only_event(events, "http.client.HTTPConnection.connect", "# marker-http-connect")
    assert event.detail == f"127.0.0.1:{port}"


@pytest.fixture
def http_url() -> Iterator[str]:
    """A URL (with a query string) served by http.server in a thread on 127.0.0.1."""
    with http_server() as port:
        yield f"http://127.0.0.1:{port}/page?token=secret"


def test_urlopen_is_one_event(http_url: str) -> None:
    """urlopen is one event at the user's line (DNS, connect, send merged), its URL redacted."""
    responses: list[http.client.HTTPResponse] = []

    async def main() -> None:
        responses.append(urllib.request.urlopen(http_url, timeout=BOUND))  # marker-urlopen

    events = run_captured(main)
    with responses[0] as response:
        assert response.read() == b"ok"
    event = only_event(events, "urllib.request.urlopen", "# marker-urlopen")
    assert event.detail == http_url.split("?", 1)[0]
    assert event.primitives[0] == "urllib.Request"
    assert {"socket.getaddrinfo", "socket.connect"} <= set(event.primitives)


# --- imports -----------------------------------------------------------------------


@pytest.fixture
def fresh_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Write never-imported modules to tmp_path on sys.path; unload them after the test."""
    names: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str = "VALUE = 1\n") -> None:
        assert name not in sys.modules
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        names.append(name)

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_first_import_is_one_quiet_event(fresh_modules: Callable[..., None]) -> None:
    """A first import is one quiet event per module loaded, each at the line importing it."""
    fresh_modules("lh_fresh_outer", "import lh_fresh_inner\nVALUE = lh_fresh_inner.VALUE\n")
    fresh_modules("lh_fresh_inner")
    values: list[int] = []

    async def main() -> None:
        import lh_fresh_outer  # marker-import

        values.append(lh_fresh_outer.VALUE)

    events = run_captured(main)
    assert loud(events) == []
    outer = sys.modules["lh_fresh_outer"].__file__
    assert [
        (e.operation, e.detail, e.quiet, e.culprit and (e.culprit.filename, e.culprit.lineno))
        for e in events
    ] == [
        ("import", "lh_fresh_outer", True, (__file__, line_of("# marker-import", __file__))),
        ("import", "lh_fresh_inner", True, (outer, 1)),
    ]
    assert values == [1]


def test_first_import_is_loud_with_imports_incident(fresh_modules: Callable[..., None]) -> None:
    """With imports='incident' the first import of a module is a loud import event."""
    fresh_modules("lh_fresh_loud")

    async def main() -> None:
        import lh_fresh_loud  # noqa: F401  # marker-import-loud

    event = only_event(run_captured(main, imports="incident"), "import", "# marker-import-loud")
    assert event.detail == "lh_fresh_loud"
    assert not event.quiet


def test_first_import_is_nothing_with_imports_ignore(fresh_modules: Callable[..., None]) -> None:
    """With imports='ignore' a first import produces no event at all."""
    fresh_modules("lh_fresh_ignored")

    async def main() -> None:
        import lh_fresh_ignored  # noqa: F401

    assert run_captured(main, imports="ignore") == []


def test_import_module_is_an_import_event(fresh_modules: Callable[..., None]) -> None:
    """importlib.import_module of a fresh module is one import event at the caller's line."""
    fresh_modules("lh_fresh_dynamic")

    async def main() -> None:
        importlib.import_module("lh_fresh_dynamic")  # marker-import-module

    events = run_captured(main, imports="incident")
    event = only_event(events, "import", "# marker-import-module")
    assert event.detail == "lh_fresh_dynamic"


def test_import_of_a_loaded_module_is_nothing() -> None:
    """An import that finds the module in sys.modules reads nothing and is no event."""
    assert "json" in sys.modules or importlib.import_module("json")

    async def main() -> None:
        import json  # noqa: F401

        importlib.import_module("json")

    assert run_captured(main) == []


# --- one user call, one incident: library code -------------------------------------


def test_lazy_import_inside_a_library_call_keeps_one_event(
    fresh_modules: Callable[..., None], tree: Path
) -> None:
    """A library call that imports lazily between two blocking steps is still one loud event."""
    fresh_modules(
        "lh_fake_lib",
        "def fetch(path):\n"
        "    with open(path) as f:\n"
        "        f.read()\n"
        "    import lh_fake_lib_lazy\n"
        "    with open(path) as f:\n"
        "        return f.read()\n",
    )
    fresh_modules("lh_fake_lib_lazy")
    lib = importlib.import_module("lh_fake_lib")
    path = str(tree / "a.txt")

    async def main() -> None:
        lib.fetch(path)  # marker-lib-fetch

    events = run_captured(main, exclude_modules=["lh_fake_lib"])
    only_event(events, "open", "# marker-lib-fetch")
    assert [(e.operation, e.detail) for e in events if e.quiet] == [("import", "lh_fake_lib_lazy")]


def test_blocking_in_library_tasks_is_blamed_on_the_library(
    fresh_modules: Callable[..., None],
) -> None:
    """Library code run as tasks or callbacks is blamed at its own line, once per call."""
    fresh_modules(
        "lh_fake_tasks",
        "import time\n"
        "async def work():\n"
        "    time.sleep(0.001)  # marker-lib-task\n"
        "def callback():\n"
        "    time.sleep(0.001)  # marker-lib-callback\n",
    )
    lib = importlib.import_module("lh_fake_tasks")
    source = lib.__file__
    assert source is not None

    async def main() -> None:
        await asyncio.gather(asyncio.create_task(lib.work()), asyncio.create_task(lib.work()))
        asyncio.get_running_loop().call_soon(lib.callback)
        await asyncio.sleep(0)  # the callback runs before this task resumes

    found = loud(run_captured(main, exclude_modules=["lh_fake_tasks"]))
    task_line = line_of("# marker-lib-task", source)
    callback_line = line_of("# marker-lib-callback", source)
    assert [(e.operation, e.culprit and (e.culprit.filename, e.culprit.lineno)) for e in found] == [
        ("time.sleep", (source, task_line)),
        ("time.sleep", (source, task_line)),
        ("time.sleep", (source, callback_line)),
    ]


# --- refusing a call ---------------------------------------------------------------


def test_raise_mode_refuses_open_before_the_file_is_made(tmp_path: Path) -> None:
    """In raise mode open() raises BlockingCallError at its line and creates no file."""
    target = tmp_path / "never.txt"
    caught: list[BaseException] = []

    async def main() -> None:
        try:
            open(target, "w").close()  # marker-raise-open
        except BlockingCallError as exc:
            caught.append(exc)

    run_captured(main, mode="raise")
    assert len(caught) == 1
    assert f"{__file__}:{line_of('# marker-raise-open', __file__)}" in str(caught[0])
    assert not target.exists()


def test_warnings_error_filter_refuses_open(tmp_path: Path) -> None:
    """Under an 'error' filter for BlockingCallWarning, open() on the loop raises."""
    target = tmp_path / "never.txt"

    async def main() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error", BlockingCallWarning)
            with pytest.raises(BlockingCallError):
                open(target, "w").close()

    run_captured(main)
    assert not target.exists()
