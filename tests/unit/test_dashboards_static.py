"""The committed Grafana dashboards: generated, and querying only what loophound exports.

The Prometheus names are not typed here: they come from running the OpenTelemetry
Prometheus exporter over ``loophound.sinks.otel.METRICS`` and over a real ``OtelSink``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry

from loophound._events import Event, Frame
from loophound._recorder import Stats
from loophound.detectors.watchdog import LoopDelays
from loophound.sinks.otel import METRICS, OtelSink

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
BUILD = DASHBOARDS / "build.py"

#: PromQL words that are not metric names: aggregations, operators, modifiers.
PROMQL_WORDS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    ]
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)")
_IDENTIFIER = re.compile(r"(?<![\w$:.])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")
#: The four string arguments that end label_replace(v, "dst", "replacement", "src", "regex").
_LABEL_REPLACE_TAIL = re.compile(r',\s*"([^"]*)"\s*,\s*"[^"]*"\s*,\s*"([^"]*)"\s*,\s*"[^"]*"\s*\)')


def load_build() -> ModuleType:
    """Import dashboards/build.py as a module."""
    spec = importlib.util.spec_from_file_location("loophound_dashboards_build", BUILD)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, Any]:
    """Return every committed dashboard, by file name."""
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, f"no dashboards in {DASHBOARDS}"
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in files}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel, those inside rows included; rows themselves are not panels."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions() -> list[tuple[str, str, str]]:
    """Return (file, panel title, expr) for every target of every panel of every dashboard."""
    found = []
    for name, dashboard in committed().items():
        for panel in panels(dashboard):
            found.extend(
                (name, panel["title"], target["expr"])
                for target in panel.get("targets", [])
                if target.get("expr")
            )
    return found


def variable_queries() -> list[str]:
    """Return the Prometheus query of every query variable of every dashboard."""
    return [
        variable["query"]
        for dashboard in committed().values()
        for variable in dashboard.get("templating", {}).get("list", [])
        if variable["type"] == "query"
    ]


def label_values(query: str) -> tuple[str, str]:
    """Return the metric and label of a ``label_values(metric, label)`` variable query."""
    match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", query)
    assert match is not None, f"not a label_values(metric, label) query: {query}"
    return match.group(1), match.group(2)


def metric_names(expr: str) -> set[str]:
    """Return the metric names an expression selects."""
    text = _STRING.sub('""', expr)
    text = _GROUPING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in PROMQL_WORDS}


def labels_used(expr: str) -> set[str]:
    """Return the labels an expression reads (matchers, groupings, label_replace sources).

    Labels that label_replace creates are left out: they are made, not read.
    """
    created = {dst for dst, _src in _LABEL_REPLACE_TAIL.findall(expr)}
    used = {src for _dst, src in _LABEL_REPLACE_TAIL.findall(expr)}
    assert len(_LABEL_REPLACE_TAIL.findall(expr)) == expr.count("label_replace("), expr
    text = _STRING.sub('""', expr)  # label values may hold commas, braces, parentheses
    for _word, names in _GROUPING.findall(text):
        used.update(name.strip() for name in names.split(",") if name.strip())
    for matchers in _MATCHERS.findall(text):
        for matcher in matchers.split(","):
            match = _MATCHER_NAME.match(matcher)
            if match:
                used.add(match.group(1))
    return used - created


# --- what the code exports, through the real exporter ----------------------------------


def _exporting() -> tuple[MeterProvider, CollectorRegistry]:
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    return MeterProvider(metric_readers=[reader]), registry


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str]]]:
    return [
        (sample.name, sample.labels)
        for family in registry.collect()
        if family.name != "target"
        for sample in family.samples
    ]


@cache
def exported_names() -> frozenset[str]:
    """Return the series names the exporter makes of every instrument in METRICS."""
    provider, registry = _exporting()
    meter = provider.get_meter("loophound")
    for name, kind, unit, text in METRICS:
        if kind == "counter":
            meter.create_counter(name, unit=unit, description=text).add(1)
        elif kind == "histogram":
            meter.create_histogram(name, unit=unit, description=text).record(1)
        elif kind == "observable_counter":
            meter.create_observable_counter(
                name, callbacks=[lambda _options: [Observation(1)]], unit=unit, description=text
            )
        else:
            pytest.fail(f"METRICS has an instrument kind this test does not know: {kind}")
    names = frozenset(name for name, _labels in _samples(registry))
    provider.shutdown()
    return names


@cache
def sink_series() -> dict[str, frozenset[str]]:
    """Return each series a real OtelSink exports, with its labels (``le`` left out)."""
    provider, registry = _exporting()
    stats, delays = Stats(), LoopDelays()
    sink = OtelSink(stats, delays, meter_provider=provider)
    try:
        culprit = Frame(__file__, 42, "view")
        sink.deliver(
            Event(
                kind="stall",
                operation="cpu",
                started_at=time.time_ns(),
                duration=0.2,
                frames=(culprit,),
                culprit=culprit,
                fingerprint="f" * 16,
                thread_id=1,
                thread_name="MainThread",
                task=None,
                detectors=("watchdog",),
                request={"route": "blocking/cpu/", "method": "GET", "id": "r1"},
                victims=("r2",),
            )
        )
        delays.observe(0.01, 1)
        series: dict[str, set[str]] = {}
        for name, labels in _samples(registry):
            series.setdefault(name, set()).update(label for label in labels if label != "le")
    finally:
        sink.close()
        provider.shutdown()
    return {name: frozenset(labels) for name, labels in series.items()}


def expected_name(name: str, kind: str, unit: str) -> set[str]:
    """The exporter's naming rules as found: what build.py's docstring promises."""
    base = re.sub(r"[^a-zA-Z0-9:]+", "_", name)
    suffix = {"s": "seconds"}.get(re.sub(r"\{.*\}", "", unit), re.sub(r"\{.*\}", "", unit))
    if suffix and not base.endswith("_" + suffix):
        base += "_" + suffix
    if kind == "histogram":
        return {base + "_bucket", base + "_sum", base + "_count"}
    return {base + "_total"}


# --- the tests ------------------------------------------------------------------------


def test_build_script_reproduces_the_committed_json_byte_for_byte(tmp_path: Path) -> None:
    """Running dashboards/build.py writes exactly the committed JSON files, and no others."""
    build = load_build()
    assert build.installed_sdk() == build.SDK_VERSION, (
        f"grafana-foundation-sdk {build.installed_sdk()} is installed; the dashboards are "
        f"generated with {build.SDK_VERSION}: pin grafana-foundation-sdk=={build.SDK_VERSION}"
    )
    done = subprocess.run(
        [sys.executable, str(BUILD), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    built = {path.name: path.read_bytes() for path in tmp_path.glob("*.json")}
    on_disk = {path.name: path.read_bytes() for path in DASHBOARDS.glob("*.json")}
    assert sorted(built) == sorted(on_disk)
    for name, content in built.items():
        assert content == on_disk[name], f"dashboards/{name} is stale: run dashboards/build.py"
        assert content.endswith(b"}\n")
        assert content.decode() == json.dumps(json.loads(content), sort_keys=True, indent=2) + "\n"


def test_every_panel_has_a_promql_target() -> None:
    """Every panel of every dashboard has at least one target with a PromQL expression."""
    for name, dashboard in committed().items():
        for panel in panels(dashboard):
            exprs = [target.get("expr") for target in panel.get("targets", [])]
            assert any(isinstance(expr, str) and expr.strip() for expr in exprs), (
                f"{name}: panel {panel.get('title')!r} has no PromQL target"
            )


def test_the_exporter_names_metrics_as_build_py_documents() -> None:
    """The exporter names METRICS as build.py states, and a real sink exports all of them."""
    expected = set()
    for name, kind, unit, _text in METRICS:
        expected |= expected_name(name, kind, unit)
    assert expected == exported_names()
    assert set(sink_series()) == exported_names()


def test_every_metric_in_the_dashboards_is_one_loophound_exports() -> None:
    """Every metric name in every expr and variable query is a series the exporter makes."""
    used = {label_values(query)[0] for query in variable_queries()}
    assert used <= exported_names(), used
    for name, title, expr in expressions():
        names = metric_names(expr)
        assert names, f"{name}: {title!r} selects no metric: {expr}"
        unknown = names - exported_names()
        assert not unknown, f"{name}: {title!r} uses {sorted(unknown)}, not exported: {expr}"
        used |= names
    # Every instrument appears somewhere on the dashboards.
    for metric, _kind, _unit, _text in METRICS:
        stem = re.sub(r"[^a-zA-Z0-9]+", "_", metric)
        assert any(name.startswith(stem) for name in used), f"no panel shows {metric}"


def test_every_label_in_the_dashboards_is_an_attribute_the_sink_sets() -> None:
    """Every label an expr reads is one the sink sets on that metric (or le, on _bucket)."""
    assert {"http_route", "loophound_culprit", "loophound_kind"} <= sink_series()[
        "loophound_blocking_incidents_total"
    ]
    for name, title, expr in expressions():
        metrics = metric_names(expr)
        attributes = frozenset().union(*(sink_series()[metric] for metric in metrics))
        for label in labels_used(expr):
            if label == "le":
                assert any(m.endswith("_bucket") for m in metrics), f"{name}: {title!r}: {expr}"
                continue
            assert label in attributes, f"{name}: {title!r} reads label {label!r}: {expr}"
    for query in variable_queries():
        metric, label = label_values(query)
        assert label in sink_series()[metric], query


def test_the_label_parser_sees_matchers_groupings_and_label_replace() -> None:
    """labels_used finds matcher, by/on and label_replace source labels, not created ones."""
    expr = (
        'label_replace(sum by (a, le) (rate(m_bucket{b="x,y", c=~"$v"}[5m])) and on (d) n,'
        ' "made", "$1", "e", "(.*)")'
    )
    assert labels_used(expr) == {"a", "le", "b", "c", "d", "e"}
    assert metric_names(expr) == {"m_bucket", "n"}


def test_dashboards_query_the_datasource_variable_and_link_culprits_to_traces() -> None:
    """Panels query the ${datasource} variable; culprit rows open TraceQL on their file:line."""
    for name, dashboard in committed().items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["traces"]["query"] == "tempo"
        assert dashboard["schemaVersion"] >= 41
        tables = 0
        for panel in panels(dashboard):
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            if panel["type"] != "table":
                continue
            tables += 1
            links = panel["fieldConfig"]["defaults"]["links"]
            url = links[0]["url"]
            for variable, value in (
                ("${__data.fields.culprit_file:percentencode}", "loophound%2Fdemo%2Fviews.py"),
                ("${__data.fields.culprit_line:percentencode}", "31"),
                ("${route:percentencode}", "blocking%2Fitems%2F%3Cint%3Apk%3E%2F"),
                ("${traces}", "tempo-uid"),
                ("${__from}", "1"),
                ("${__to}", "2"),
            ):
                url = url.replace(variable, value)
            assert "${" not in url, url
            parts = urlsplit(url)
            assert parts.path == "/explore"
            (pane,) = json.loads(parse_qs(parts.query)["panes"][0]).values()
            (trace_query,) = pane["queries"]
            assert pane["datasource"] == "tempo-uid"
            assert trace_query["datasource"] == {"type": "tempo", "uid": "tempo-uid"}
            assert trace_query["queryType"] == "traceql"
            traceql = trace_query["query"]
            assert 'span.code.file.path =~ ".*loophound/demo/views.py"' in traceql
            assert "span.code.line.number = 31" in traceql
            if "$route" in json.dumps(panel["targets"]):
                assert 'span.http.route = "blocking/items/<int:pk>/"' in unquote(traceql)
        assert tables == 1, name
