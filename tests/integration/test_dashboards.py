"""The Grafana dashboards against a real Prometheus scraping the demo: every query has data.

Prometheus (Debian's package, through scripts/ensure-prometheus) scrapes the demo's
OpenTelemetry Prometheus exporter every second on 127.0.0.1; the demo serves every
blocking view, a stall with a request waiting on it, and clean views. Then every PromQL
expression of every panel of every dashboard in dashboards/ runs against Prometheus's
HTTP API with Grafana's variables filled in, and each must return at least one series.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import Server, free_port, start_server

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "scripts" / "ensure-prometheus"
DASHBOARDS = ROOT / "dashboards"
HOST = "127.0.0.1"

BLOCKING = (
    "/blocking/sleep/",
    "/blocking/file/",
    "/blocking/cpu/",
    "/blocking/json/",
    "/blocking/subprocess/",
    "/blocking/items/7/",
    "/blocking/orm/",
)
#: Route templates of the views that block in a call loophound catches (time.sleep, open,
#: subprocess.run, sqlite3.connect, the ORM). /blocking/cpu/ and /blocking/json/ are left
#: out: the watchdog reports those as stalls, and a stall's route comes from the stalled
#: task's context, which differs between Python versions (3.11 reports "none").
CALL_ROUTES = (
    "blocking/sleep/",
    "blocking/file/",
    "blocking/subprocess/",
    "blocking/items/<int:pk>/",
    "blocking/orm/",
)
CLEAN = ("/clean/async/", "/clean/thread/", "/clean/orm/", "/clean/sync/")
#: The route the drill-down dashboard is queried for: hit, timed, with a culprit line.
ROUTE = "blocking/sleep/"
#: Grafana's variables as a panel would send them (``$1`` in label_replace is not one).
VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "route": ROUTE,
    "datasource": "prometheus",
    "traces": "tempo",
}

#: Bounds: installing Prometheus, its start and stop, one HTTP call, the wait for data.
INSTALL_BOUND = 240.0
START_BOUND = 30.0
STOP_BOUND = 15.0
REQUEST_BOUND = 30.0
SCRAPE_BOUND = 30.0
SCRAPE_INTERVAL = 1.0
ROUNDS = 3

pytestmark = pytest.mark.timeout(INSTALL_BOUND + 120)

#: No proxy, whatever the environment says: everything here is on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str) -> tuple[int, bytes]:
    """GET ``url`` (30 s at most); return the status and body, error statuses included."""
    try:
        with _OPENER.open(url, timeout=REQUEST_BOUND) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def prometheus_binary() -> str:
    """Return the path scripts/ensure-prometheus prints, or skip the test with its reason."""
    try:
        done = subprocess.run(
            ["bash", str(ENSURE)],
            capture_output=True,
            text=True,
            timeout=INSTALL_BOUND,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"scripts/ensure-prometheus took more than {INSTALL_BOUND:.0f} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        pytest.skip(f"scripts/ensure-prometheus failed: {done.stderr.strip()[-800:]}")
    return lines[-1]


@dataclass
class Prometheus:
    """A Prometheus server process on 127.0.0.1 and its HTTP API."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """Call the HTTP API; return its decoded JSON answer."""
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"http://{HOST}:{self.port}/api/v1/{path}?{query}")
        answer: dict[str, Any] = json.loads(body)
        assert status == 200, f"{path} {params}: {status} {answer}"
        assert answer["status"] == "success", answer
        return answer

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query now; return its result (a vector, or a scalar as one item)."""
        data = self.api("query", query=expr)["data"]
        result = data["result"]
        return result if data["resultType"] in {"vector", "matrix"} else [result]

    def stop(self) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL after 15 s (which fails)."""
        if self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_BOUND)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_BOUND)
            raise AssertionError(
                f"prometheus {self.process.pid} ignored SIGTERM for 15 s"
            ) from None


def start_prometheus(binary: str, directory: Path, target_port: int) -> Prometheus:
    """Start Prometheus scraping 127.0.0.1:target_port every second; return once ready."""
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL:.0f}s\n"
        f"  scrape_timeout: {SCRAPE_INTERVAL:.0f}s\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL:.0f}s\n"
        "scrape_configs:\n"
        "  - job_name: loophound-demo\n"
        "    static_configs:\n"
        f"      - targets: ['{HOST}:{target_port}']\n",
        encoding="utf-8",
    )
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={HOST}:{port}",
                "--log.level=warn",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    prometheus = Prometheus(process, port, log)
    deadline = time.monotonic() + START_BOUND
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited with {process.returncode}: {log.read_text()}")
        try:
            if http_get(f"http://{HOST}:{port}/-/ready")[0] == 200:
                return prometheus
        except OSError:
            pass
        time.sleep(0.1)
    prometheus.stop()
    raise AssertionError(f"prometheus was not ready within {START_BOUND:.0f} s: {log.read_text()}")


def start_demo(directory: Path, metrics_port: int) -> Server:
    """Start the demo under uvicorn with the otel sink and the Prometheus exporter."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "loophound.demo.asgi:application"]
    command += ["--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log"]
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": HOST,
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "loophound-demo",
        "LOOPHOUND_SINKS": "jsonl,otel",
    }
    return start_server(command, port, directory / "events.jsonl", env)


def drive(demo: Server, rounds: int) -> None:
    """Every blocking view, stalls with a clean request waiting on them, every clean view."""
    for _ in range(rounds):
        for path in BLOCKING:
            status, body = http_get(demo.url(path))
            assert status == 200, f"{path}: {status} {body[:300]!r}"
    with ThreadPoolExecutor(max_workers=1) as pool:
        for _ in range(rounds):
            waiting = pool.submit(http_get, demo.url("/clean/async/"))
            assert http_get(demo.url("/blocking/cpu/"))[0] == 200
            assert waiting.result(REQUEST_BOUND)[0] == 200
    for path in CLEAN:
        assert http_get(demo.url(path))[0] == 200, path


def wait_for_scrape_after(prometheus: Prometheus, moment: float) -> None:
    """Return once Prometheus holds a scrape of the demo started after ``moment`` (30 s at most)."""
    deadline = time.monotonic() + SCRAPE_BOUND
    while time.monotonic() < deadline:
        result = prometheus.query('timestamp(up{job="loophound-demo"} == 1)')
        if result and float(result[0]["value"][1]) > moment:
            return
        time.sleep(0.2)
    raise AssertionError(f"prometheus did not scrape the demo within {SCRAPE_BOUND:.0f} s")


def panel_queries() -> list[tuple[str, str, str]]:
    """Return (dashboard file, panel title, expr) for every target of every panel."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for inner in panel.get("panels", [panel]):
                found.extend(
                    (path.name, inner["title"], target["expr"])
                    for target in inner.get("targets", [])
                    if target.get("expr")
                )
    assert found, f"no panel queries in {DASHBOARDS}"
    return found


def substitute(expr: str) -> str:
    """Fill in Grafana's variables ($name and ${name}); leave other $ words (label_replace's)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return VARIABLES.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def values(result: list[dict[str, Any]]) -> list[float]:
    """Return the values of an instant query's result."""
    return [float(item["value"][1]) if "value" in item else float(item[1]) for item in result]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus that has scraped the demo after the traffic (both stopped by pid after)."""
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("dashboards")
    metrics_port = free_port()
    prometheus = start_prometheus(binary, directory, metrics_port)
    try:
        demo = start_demo(directory, metrics_port)
        try:
            # Once to create every series, then again: a rate needs a scrape before the
            # traffic and one after it. Sinks deliver after the response: a margin of one
            # scrape interval lets the exporter count the last incidents first.
            drive(demo, 1)
            wait_for_scrape_after(prometheus, time.time() + SCRAPE_INTERVAL)
            drive(demo, ROUNDS)
            wait_for_scrape_after(prometheus, time.time() + SCRAPE_INTERVAL)
            yield prometheus
        finally:
            demo.stop()
    finally:
        prometheus.stop()


def test_every_panel_query_of_every_dashboard_returns_data(scraped: Prometheus) -> None:
    """Each PromQL expr of each panel, its variables filled in, returns at least one series."""
    empty = [
        f"{name}: {title}: {substitute(expr)}"
        for name, title, expr in panel_queries()
        if not scraped.query(substitute(expr))
    ]
    assert not empty, "queries with no data:\n" + "\n".join(empty)


def test_every_panel_query_shows_the_traffic(scraped: Prometheus) -> None:
    """Each expr has a finite value (no NaN from an empty window); rates see the routes hit."""
    not_finite = [
        f"{name}: {title}: {substitute(expr)}"
        for name, title, expr in panel_queries()
        if not any(math.isfinite(value) for value in values(scraped.query(substitute(expr))))
    ]
    assert not not_finite, "queries without a finite value:\n" + "\n".join(not_finite)
    by_route = scraped.query(
        substitute(
            "sum by (http_route) (rate(loophound_blocking_incidents_total[$__rate_interval]))"
        )
    )
    rates = {item["metric"]["http_route"]: float(item["value"][1]) for item in by_route}
    for route in CALL_ROUTES:
        assert rates.get(route, 0.0) > 0, rates


def test_route_variable_lists_the_routes_that_were_hit(scraped: Prometheus) -> None:
    """label_values(loophound_blocking_incidents_total, http_route) offers the routes hit."""
    routes = scraped.api(
        "label/http_route/values", **{"match[]": "loophound_blocking_incidents_total"}
    )["data"]
    assert set(CALL_ROUTES) <= set(routes), routes
