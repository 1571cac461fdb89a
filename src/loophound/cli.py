"""The ``loophound`` command: ``demo``, ``run -- SERVER ...`` and ``report``.

Bad arguments print a message naming the argument, the value and what is accepted,
and exit with status 2 before anything starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loophound.report import command as report_command

__all__ = ["main"]

#: Every path the demo requests, and whether loophound should report it.
DEMO_PATHS: tuple[tuple[str, bool], ...] = (
    ("/blocking/sleep/", True),
    ("/blocking/file/", True),
    ("/blocking/cpu/", True),
    ("/blocking/json/", True),
    ("/blocking/subprocess/", True),
    ("/blocking/items/7/", True),
    ("/blocking/orm/", True),
    ("/clean/async/", False),
    ("/clean/thread/", False),
    ("/clean/orm/", False),
    ("/clean/sync/", False),
)
OTEL_CHOICES = ("console", "otlp", "prometheus")
_START_TIMEOUT = 30.0
_REQUEST_TIMEOUT = 30.0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --port {text!r}: expected an integer from 0 to 65535 (0 picks a free port)"
        ) from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"invalid --port {value}: expected an integer from 0 to 65535 (0 picks a free port)"
        )
    return value


def _requests(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(
            f"invalid --requests {text!r}: expected an integer from 1 to 1000"
        )
    return value


def _out(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"invalid --out {text!r}: a directory; give a file path")
    if not path.parent.resolve().is_dir():
        raise argparse.ArgumentTypeError(
            f"invalid --out {text!r}: the directory {str(path.parent)!r} does not exist"
        )
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loophound", description="Find the code that blocks your asyncio event loop."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="serve a small Django project with blocking views and show what loophound finds",
    )
    demo.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (0: a free one)")
    demo.add_argument("--requests", type=_requests, default=3, help="requests per view (default 3)")
    demo.add_argument(
        "--out",
        type=_out,
        default=Path("loophound-demo.jsonl"),
        help="JSON-lines event log to append to (default loophound-demo.jsonl)",
    )
    demo.add_argument(
        "--otel",
        choices=OTEL_CHOICES,
        default=None,
        help="also send spans and metrics through OpenTelemetry: console (spans printed by "
        "the server), otlp (OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, default "
        "localhost:4318) or prometheus (metrics served for scraping)",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="keep serving after the burst, so you can open it in a browser (Ctrl-C stops)",
    )
    run = commands.add_parser(
        "run",
        help="run an ASGI server with its application wrapped in LoophoundMiddleware",
        description="Run SERVER (uvicorn, hypercorn, daphne or granian) with the application "
        "it serves wrapped in LoophoundMiddleware; settings from LOOPHOUND_* variables. "
        "Example: loophound run -- uvicorn proj.asgi:application --port 8000",
    )
    run.add_argument("server", nargs=argparse.REMAINDER, help="the server command line")
    report_command.add_parser(commands)
    return parser


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the demo server exited early with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the demo server did not listen on 127.0.0.1:{port} within 30 s")


def _get(url: str, results: list[tuple[str, int]]) -> None:
    try:
        with urllib.request.urlopen(url, timeout=_REQUEST_TIMEOUT) as response:  # noqa: S310
            results.append((url, response.status))
    except urllib.error.URLError as exc:
        results.append((url, getattr(exc, "code", 0) or 0))


def _burst(port: int, per_view: int) -> list[tuple[str, int]]:
    """Request every view ``per_view`` times, with a clean request running alongside.

    The clean request in flight while a blocking view holds the loop is what a real
    service suffers: it waits, yet loophound does not blame it.
    """
    results: list[tuple[str, int]] = []
    for _ in range(per_view):
        for path, _blocking in DEMO_PATHS:
            bystander = threading.Thread(
                target=_get, args=(f"http://127.0.0.1:{port}/clean/async/", results)
            )
            bystander.start()
            _get(f"http://127.0.0.1:{port}{path}", results)
            bystander.join(_REQUEST_TIMEOUT + 5)
    return results


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def _read_events(path: Path, pid: int) -> list[dict[str, Any]]:
    events = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("pid") == pid:
                events.append(record)
    return events


def _table(events: list[dict[str, Any]]) -> list[str]:
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for record in events:
        if record.get("quiet") or record.get("kind") == "request":
            continue
        request = record.get("request") or {}
        route = request.get("route") or request.get("path") or "(no request)"
        culprit = record.get("culprit") or {}
        where = f"{culprit.get('file', '?')}:{culprit.get('line', '?')}"
        groups[(route, record.get("operation", "?"), where)].append(record.get("duration") or 0.0)
    rows = [("route", "operation", "culprit", "max ms", "count")]
    for (route, operation, where), durations in sorted(groups.items()):
        rows.append((route, operation, where, f"{max(durations) * 1000:.0f}", str(len(durations))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]


def _otel_environment(otel: str | None) -> dict[str, str]:
    """Return the standard OpenTelemetry variables the demo server reads."""
    if otel is None:
        return {}
    env = {"LOOPHOUND_SINKS": "jsonl,otel", "OTEL_SERVICE_NAME": "loophound-demo"}
    if otel == "console":
        env.update(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none")
    elif otel == "otlp":
        env.update(OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="otlp")
    else:
        env.update(
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="prometheus",
            OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
            OTEL_EXPORTER_PROMETHEUS_PORT=os.environ.get(
                "OTEL_EXPORTER_PROMETHEUS_PORT", str(_free_port())
            ),
        )
    return env


def demo(port: int, per_view: int, out: Path, keep_running: bool, otel: str | None = None) -> int:
    """Serve the demo with uvicorn, drive requests at it, print what loophound found."""
    try:
        import django  # noqa: F401, PLC0415
        import uvicorn  # noqa: F401, PLC0415
    except ImportError as exc:
        print(f"loophound demo needs {exc.name}: pip install 'loophound[demo]'", file=sys.stderr)
        return 2
    port = port or _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "loophound.demo.settings",
        "LOOPHOUND_JSONL": str(out.resolve()),
        "LOOPHOUND_SINKS": "jsonl",
        **_otel_environment(otel),
    }
    if otel is not None:
        try:
            import opentelemetry.instrumentation.asgi  # noqa: PLC0415
            import opentelemetry.sdk  # noqa: F401, PLC0415
        except ImportError as exc:
            print(
                f"loophound demo --otel needs {exc.name}: pip install 'loophound[demo]'",
                file=sys.stderr,
            )
            return 2
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "loophound.demo.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "asyncio",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    print(f"loophound demo: serving the demo project on http://127.0.0.1:{port}/ (uvicorn)")
    if otel == "prometheus":
        metrics_port = env["OTEL_EXPORTER_PROMETHEUS_PORT"]
        print(f"metrics for Prometheus on http://127.0.0.1:{metrics_port}/metrics")
    server = subprocess.Popen(command, env=env)
    try:
        _wait_until_listening(port, server)
        results = _burst(port, per_view)
        failed = [url for url, status in results if status != 200]
        print(f"sent {len(results)} requests, {len(results) - len(failed)} answered 200")
        if keep_running:
            print(f"serving until Ctrl-C; try http://127.0.0.1:{port}/blocking/sleep/")
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
    finally:
        _stop(server)
    events = _read_events(out, server.pid)
    print()
    print("\n".join(_table(events)))
    print()
    print(f"{len(events)} events written to {out}")
    _write_demo_report(events, out)
    return 0


def _write_demo_report(events: list[dict[str, Any]], out: Path) -> None:
    """Write this run's HTML report next to the log, never over a file not ours."""
    from loophound.report.aggregate import summarize  # noqa: PLC0415 - only at the end
    from loophound.report.html import GENERATOR, write_html  # noqa: PLC0415

    target = out.with_suffix(".html")
    if target.exists():
        head = target.read_text(encoding="utf-8", errors="replace")[:2000]
        if GENERATOR not in head:
            print(f"not writing the HTML report: {target} exists and was not made by loophound")
            return
    write_html(summarize(events), str(target), [str(out)], [])
    print(f"HTML report (flame graph, timeline): {target.resolve()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``loophound`` command line."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return demo(args.port, args.requests, args.out, args.keep_running, args.otel)
    if args.command == "report":
        return report_command.run(args)
    if args.command == "run":
        from loophound.run import run  # noqa: PLC0415 - only this command needs it

        command = list(args.server)
        if command[:1] == ["--"]:
            command = command[1:]
        return run(command)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
