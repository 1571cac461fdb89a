"""The audit detector: PEP 578 audit events raised on a loop thread, no patching.

Audit hooks cannot be removed, so the process gets exactly one, added the first time
any guard installs it; uninstalling only clears the recorder it reports to. The hook
tests the event name against a frozenset before anything else: every audited event in
the process pays for that test, including the ``object.__getattr__`` events that
loophound's own frame walking raises.
"""

from __future__ import annotations

import logging
import sys
import threading
from asyncio.events import _get_running_loop
from collections.abc import Callable
from typing import Any, NamedTuple

from loophound._recorder import Recorder
from loophound._redact import redact_command, redact_host, redact_path, redact_url
from loophound.exceptions import BlockingCallError

__all__ = ["AUDIT_OPERATIONS", "AuditDetector"]

logger = logging.getLogger("loophound")
_get_ident = threading.get_ident


def _always(_args: tuple[Any, ...]) -> bool:
    return True


def _is_path(args: tuple[Any, ...]) -> bool:
    # open(fd) wraps a descriptor that is already open: no file system access.
    return bool(args) and not isinstance(args[0], int)


def _socket_blocks(args: tuple[Any, ...]) -> bool:
    try:
        return bool(args[0].gettimeout() != 0.0)
    except Exception:
        return True


def _sleeps(args: tuple[Any, ...]) -> bool:
    try:
        return bool(args[0] > 0)
    except Exception:
        return True


def _first(redactor: Callable[[object], str]) -> Callable[[tuple[Any, ...]], object]:
    def detail(args: tuple[Any, ...]) -> object:
        return (redactor, args[0]) if args else None

    return detail


def _nth(index: int, redactor: Callable[[object], str]) -> Callable[[tuple[Any, ...]], object]:
    def detail(args: tuple[Any, ...]) -> object:
        return (redactor, args[index]) if len(args) > index else None

    return detail


def _host(args: tuple[Any, ...]) -> object:
    return (redact_host, args[0]) if args else None


def _address(args: tuple[Any, ...]) -> object:
    return (_format_address, args[1]) if len(args) > 1 else None


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return redact_path(address)


def _http_connect(args: tuple[Any, ...]) -> object:
    return (redact_host, f"{args[1]}:{args[2]}") if len(args) > 2 else None


def _no_detail(_args: tuple[Any, ...]) -> object:
    return None


class _Spec(NamedTuple):
    operation: str
    blocks: Callable[[tuple[Any, ...]], bool]
    detail: Callable[[tuple[Any, ...]], object]


_path = _first(redact_path)
_SPECS: dict[str, _Spec] = {
    "open": _Spec("open", _is_path, _path),
    "os.listdir": _Spec("os.listdir", _always, _path),
    "os.scandir": _Spec("os.scandir", _always, _path),
    "os.walk": _Spec("os.walk", _always, _path),
    "os.fwalk": _Spec("os.fwalk", _always, _path),
    "os.remove": _Spec("os.remove", _always, _path),
    "os.rename": _Spec("os.rename", _always, _path),
    "os.mkdir": _Spec("os.mkdir", _always, _path),
    "os.rmdir": _Spec("os.rmdir", _always, _path),
    "os.chmod": _Spec("os.chmod", _always, _path),
    "os.chown": _Spec("os.chown", _always, _path),
    "os.link": _Spec("os.link", _always, _path),
    "os.symlink": _Spec("os.symlink", _always, _path),
    "os.truncate": _Spec("os.truncate", _always, _path),
    "os.utime": _Spec("os.utime", _always, _path),
    "os.listxattr": _Spec("os.listxattr", _always, _path),
    "os.getxattr": _Spec("os.getxattr", _always, _path),
    "os.setxattr": _Spec("os.setxattr", _always, _path),
    "os.removexattr": _Spec("os.removexattr", _always, _path),
    "shutil.copyfile": _Spec("shutil.copyfile", _always, _path),
    "shutil.copymode": _Spec("shutil.copymode", _always, _path),
    "shutil.copystat": _Spec("shutil.copystat", _always, _path),
    "shutil.copytree": _Spec("shutil.copytree", _always, _path),
    "shutil.rmtree": _Spec("shutil.rmtree", _always, _path),
    "shutil.move": _Spec("shutil.move", _always, _path),
    "shutil.chown": _Spec("shutil.chown", _always, _path),
    "shutil.make_archive": _Spec("shutil.make_archive", _always, _path),
    "shutil.unpack_archive": _Spec("shutil.unpack_archive", _always, _path),
    "glob.glob": _Spec("glob.glob", _always, _path),
    "glob.glob/2": _Spec("glob.glob", _always, _path),
    "tempfile.mkstemp": _Spec("tempfile.mkstemp", _always, _path),
    "tempfile.mkdtemp": _Spec("tempfile.mkdtemp", _always, _path),
    "fcntl.flock": _Spec("fcntl.flock", _always, _no_detail),
    "fcntl.lockf": _Spec("fcntl.lockf", _always, _no_detail),
    "subprocess.Popen": _Spec("subprocess.Popen", _always, _nth(1, redact_command)),
    "os.system": _Spec("os.system", _always, _first(redact_command)),
    "os.exec": _Spec("os.exec", _always, _first(redact_command)),
    "os.spawn": _Spec("os.spawn", _always, _nth(1, redact_command)),
    "os.posix_spawn": _Spec("os.posix_spawn", _always, _first(redact_command)),
    "os.fork": _Spec("os.fork", _always, _no_detail),
    "os.forkpty": _Spec("os.forkpty", _always, _no_detail),
    "sqlite3.connect": _Spec("sqlite3.connect", _always, _path),
    "socket.connect": _Spec("socket.connect", _socket_blocks, _address),
    "socket.getaddrinfo": _Spec("socket.getaddrinfo", _always, _host),
    "socket.gethostbyname": _Spec("socket.gethostbyname", _always, _host),
    "socket.gethostbyname_ex": _Spec("socket.gethostbyname_ex", _always, _host),
    "socket.gethostbyaddr": _Spec("socket.gethostbyaddr", _always, _host),
    "socket.getnameinfo": _Spec("socket.getnameinfo", _always, _no_detail),
    "http.client.connect": _Spec("http.client.connect", _always, _http_connect),
    "urllib.Request": _Spec("urllib.Request", _always, _first(redact_url)),
    "ftplib.connect": _Spec("ftplib.connect", _always, _nth(1, str)),
    "smtplib.connect": _Spec("smtplib.connect", _always, _nth(1, str)),
    "poplib.connect": _Spec("poplib.connect", _always, _nth(1, str)),
    "imaplib.open": _Spec("imaplib.open", _always, _nth(1, str)),
    "time.sleep": _Spec("time.sleep", _sleeps, _first(str)),
}
#: Raised when a loop's ``run_forever`` installs or restores its async generator hooks
#: (asyncio and uvloop alike, in any thread): how loops are discovered.
_LOOP_HOOKS = "sys.set_asyncgen_hook_firstiter"
_WATCHED = frozenset({*_SPECS, _LOOP_HOOKS})
AUDIT_OPERATIONS = tuple(sorted({spec.operation for spec in _SPECS.values()}))

#: The recorder the one process-wide hook reports to; ``None`` when no guard is on.
_recorder: Recorder | None = None
_hook_added = False
_failed = False
#: False when only loop discovery is wanted (the audit detector itself is off).
_report_calls = True


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _WATCHED:
        return
    if event == _LOOP_HOOKS:
        _loop_changed()
        return
    if not _report_calls or _get_running_loop() is None:
        return
    recorder = _recorder
    if recorder is None:
        return
    tid = _get_ident()
    busy = recorder.busy
    if tid in busy:
        return
    busy.add(tid)
    try:
        spec = _SPECS[event]
        if spec.blocks(args):
            recorder.report(spec.operation, "audit", spec.detail(args), sys._getframe(1))
    except BlockingCallError:
        raise
    except Exception:
        _disable()
    finally:
        busy.discard(tid)


def _loop_changed() -> None:
    recorder = _recorder
    if recorder is None or recorder.on_loop_change is None:
        return
    try:
        recorder.on_loop_change()
    except Exception:
        _disable()


def _disable() -> None:
    global _recorder, _failed
    _recorder = None
    if not _failed:
        _failed = True
        logger.exception("loophound: the audit detector failed and is disabled")  # noqa: LOG004


class AuditDetector:
    """Connects the process's one audit hook to a recorder while installed."""

    name = "audit"

    def __init__(self, recorder: Recorder, *, report_calls: bool = True) -> None:
        self._recorder = recorder
        self._report_calls = report_calls

    def install(self) -> None:
        """Add the hook once per process, then point it at this recorder."""
        global _hook_added, _recorder, _failed, _report_calls
        if not _hook_added:
            sys.addaudithook(_hook)
            _hook_added = True
        _failed = False
        _report_calls = self._report_calls
        _recorder = self._recorder

    def uninstall(self) -> None:
        """Make the hook return at once again."""
        global _recorder
        if _recorder is self._recorder:
            _recorder = None
