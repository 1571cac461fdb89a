"""Build loophound's Grafana dashboards with grafana-foundation-sdk and write them as JSON.

    python dashboards/build.py            # rewrite dashboards/*.json
    python dashboards/build.py --check    # exit 1 if a committed file is not what this builds
    python dashboards/build.py --out DIR  # write into DIR instead

The JSON files beside this script are generated: change this script, run it, commit both.
Output is deterministic (sorted keys, two-space indent, a trailing newline).

The metric names are those the OpenTelemetry Prometheus exporter gives loophound's
instruments (``loophound.sinks.otel.METRICS``): dots become underscores, the unit ``s``
becomes a ``_seconds`` suffix, ``{...}`` units add nothing, counters end in ``_total`` and
histograms are read through ``_bucket``/``_sum``/``_count``. Labels are the instruments'
attributes with dots as underscores. tests/unit/test_dashboards_static.py checks all of it
against the code.

Where the SDK falls short: field data links are typed as dashboard links (``DashboardLink``),
so each data link carries a few dashboard-link keys (``type``, ``icon``, ``tags``...) that
Grafana ignores on a field link; ``title``, ``url`` and ``targetBlank`` are what it reads.
Transformation and override option objects are plain dicts: the SDK types their envelope
(``DataTransformerConfig``, ``DynamicConfigValue``), not each transformer's options.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

#: The SDK release these files were generated with; another one writes other JSON.
SDK_VERSION = "1769699379!11.6.0"
HERE = Path(__file__).resolve().parent

# --- what loophound exports (Prometheus names) ------------------------------------------

INCIDENTS = "loophound_blocking_incidents_total"
DURATION = "loophound_blocking_duration_seconds"
DELAY = "loophound_loop_delay_seconds"
VICTIMS = "loophound_stall_victims"
DROPPED = "loophound_events_dropped_total"
FAILURES = "loophound_sink_failures_total"

ROUTE = "http_route"
OPERATION = "loophound_operation"
CULPRIT = "loophound_culprit"
KIND = "loophound_kind"

#: Rows of the culprit tables.
TOP = 10

PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TEMPO_TYPE = "tempo"


# --- PromQL ------------------------------------------------------------------------------


def _selector(metric: str, route: bool) -> str:
    return f'{metric}{{{ROUTE}="$route"}}' if route else metric


def rate(metric: str, by: str = "", route: bool = False) -> str:
    """Per-second rate of a counter (or a histogram part), summed, optionally by labels."""
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(rate({_selector(metric, route)}[$__rate_interval]))"


def quantile(q: float, histogram: str, by: str = "", route: bool = False) -> str:
    """The q-quantile of a histogram over the rate interval, from its buckets."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', labels, route)})"


def with_file_and_line(expr: str) -> str:
    """Add culprit_file and culprit_line labels, split from loophound_culprit (path:line)."""
    file = f'label_replace({expr}, "culprit_file", "$1", "{CULPRIT}", "(.+):[0-9]+")'
    return f'label_replace({file}, "culprit_line", "$1", "{CULPRIT}", ".+:([0-9]+)")'


def top_culprits(route: bool) -> tuple[str, str]:
    """Incidents and seconds blocked per culprit line and operation, the TOP busiest."""
    by = f"{CULPRIT}, {OPERATION}"
    counted = f"topk({TOP}, sum by ({by}) (increase({_selector(INCIDENTS, route)}[$__range])))"
    blocked = (
        f"sum by ({by}) (increase({_selector(DURATION + '_sum', route)}[$__range]))"
        f" and on ({by}) {counted}"
    )
    return with_file_and_line(counted), with_file_and_line(blocked)


# --- building blocks ---------------------------------------------------------------------


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    """A range query over the dashboard's Prometheus."""
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .range()
        .ref_id(ref)
        .datasource(PROMETHEUS)
    )


def table_query(expr: str, ref: str) -> prometheus.Dataquery:
    """An instant query over the dashboard's time range, one row per series."""
    return (
        prometheus.Dataquery()
        .expr(expr)
        .instant()
        .format(PromQueryFormat.TABLE)
        .ref_id(ref)
        .datasource(PROMETHEUS)
    )


def graph(title: str, description: str, unit: str, width: int = 12) -> timeseries.Panel:
    """A time series panel with a table legend and a shared tooltip."""
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(show_legend=True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(
            common_builder.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )


def single(title: str, description: str, unit: str, expr: str) -> stat.Panel:
    """A stat panel showing the last value of one expression."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(4)
        .height(4)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(
            common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(values=False)
        )
        .with_target(query(expr, title))
    )


def traces_link(route: bool) -> str:
    """An Explore URL: the traces datasource, TraceQL for the row's culprit file and line.

    ``code.file.path`` on the spans is absolute; the culprit label is relative to the
    import root, so the query matches it as a path suffix.
    """
    condition = 'span.code.file.path =~ ".*__FILE__" && span.code.line.number = __LINE__' + (
        ' && span.http.route = "__ROUTE__"' if route else ""
    )
    pane = {
        "loophound": {
            "datasource": "__TRACES__",
            "queries": [
                {
                    "datasource": {"type": TEMPO_TYPE, "uid": "__TRACES__"},
                    "limit": 20,
                    "query": "{ " + condition + " }",
                    "queryType": "traceql",
                    "refId": "A",
                    "tableType": "traces",
                }
            ],
            "range": {"from": "__FROM__", "to": "__TO__"},
        }
    }
    encoded = quote(json.dumps(pane, separators=(",", ":"), sort_keys=True), safe="")
    for token, variable in (
        ("__FILE__", "${__data.fields.culprit_file:percentencode}"),
        ("__LINE__", "${__data.fields.culprit_line:percentencode}"),
        ("__ROUTE__", "${route:percentencode}"),
        ("__TRACES__", "${traces}"),
        ("__FROM__", "${__from}"),
        ("__TO__", "${__to}"),
    ):
        encoded = encoded.replace(token, variable)
    return "/explore?schemaVersion=1&panes=" + encoded


def culprit_table(title: str, description: str, route: bool) -> table.Panel:
    """The TOP culprit lines, each row linked to its traces."""
    counted, blocked = top_culprits(route)
    hidden = [model.DynamicConfigValue(id_val="custom.hidden", value=True)]
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .span(24)
        .height(10)
        .with_target(table_query(counted, "A"))
        .with_target(table_query(blocked, "B"))
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": {
                        CULPRIT: 0,
                        OPERATION: 1,
                        "Value #A": 2,
                        "Value #B": 3,
                        "culprit_file": 4,
                        "culprit_line": 5,
                    },
                    "renameByName": {
                        CULPRIT: "Culprit line",
                        OPERATION: "Operation",
                        "Value #A": "Incidents",
                        "Value #B": "Seconds blocked",
                    },
                },
            )
        )
        # Hidden, not excluded: the data link reads them.
        .override_by_name("culprit_file", hidden)
        .override_by_name("culprit_line", hidden)
        .override_by_name("Seconds blocked", [model.DynamicConfigValue(id_val="unit", value="s")])
        .sort_by([common_builder.TableSortByFieldState().display_name("Incidents").desc(desc=True)])
        .data_links(
            [
                dash.DashboardLink("Traces of this line")
                .url(traces_link(route))
                .target_blank(target_blank=True)
            ]
        )
    )


def prometheus_variable() -> dash.DatasourceVariable:
    """The Prometheus that holds loophound's metrics: every panel queries it."""
    return dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def traces_variable() -> dash.DatasourceVariable:
    """The Tempo that holds loophound's incident spans: the culprit links open it."""
    return dash.DatasourceVariable("traces").label("Traces (Tempo)").type(TEMPO_TYPE)


def base(title: str, uid: str, description: str) -> dash.Dashboard:
    """A dashboard with loophound's tags, time range and links to its siblings."""
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["loophound", "asyncio"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .link(
            dash.DashboardLink("loophound")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["loophound"])
            .as_dropdown(as_dropdown=True)
            .include_vars(include_vars=True)
            .keep_time(keep_time=True)
        )
    )


# --- the dashboards ---------------------------------------------------------------------


def overview() -> dash.Dashboard:
    """What blocks the loop, where, how much, and whether loophound keeps up."""
    drill_down = (
        "/d/loophound-route/loophound-route?var-route=${__field.labels.http_route:percentencode}"
        "&${datasource:queryparam}&${traces:queryparam}&${__url_time_range}"
    )
    return (
        base(
            "loophound: event-loop blocking",
            "loophound-overview",
            "Incidents that blocked the asyncio event loop, by route, operation and culprit line.",
        )
        .with_variable(prometheus_variable())
        .with_variable(traces_variable())
        .with_panel(
            single("Incidents per second", "All incidents, every kind.", "short", rate(INCIDENTS))
        )
        .with_panel(
            single(
                "Loop blocked",
                "Seconds the loop was held per second of wall time (summed over processes).",
                "percentunit",
                rate(DURATION + "_sum"),
            )
        )
        .with_panel(
            single(
                "Loop delay p99",
                "99th percentile of the watchdog heartbeat's lateness.",
                "s",
                quantile(0.99, DELAY),
            )
        )
        .with_panel(
            single(
                "Victims per stall",
                "Mean number of other requests that waited while the loop stalled.",
                "short",
                f"{rate(VICTIMS + '_sum')} / {rate(VICTIMS + '_count')}",
            )
        )
        .with_panel(
            single(
                "Dropped events",
                "Incidents loophound dropped in the time range (dispatch queue full or stopped).",
                "short",
                f"sum(increase({DROPPED}[$__range]))",
            )
        )
        .with_panel(
            single(
                "Sink failures",
                "Times a sink raised in the time range.",
                "short",
                f"sum(increase({FAILURES}[$__range]))",
            )
        )
        .with_panel(
            graph(
                "Incidents per second by route",
                'Django route templates ("none": outside a request). Click a series to drill down.',
                "short",
            )
            .with_target(query(rate(INCIDENTS, ROUTE), "{{http_route}}"))
            .data_links([dash.DashboardLink("Drill down into this route").url(drill_down)])
        )
        .with_panel(
            graph(
                "Incidents per second by operation",
                "What blocked: time.sleep, open, cpu (a stall), import...",
                "short",
            ).with_target(query(rate(INCIDENTS, OPERATION), "{{loophound_operation}}"))
        )
        .with_panel(
            graph(
                "Loop blocked (share of wall time)",
                "Seconds blocked per second: sum of rate of the duration histogram's _sum.",
                "percentunit",
            )
            .with_target(query(rate(DURATION + "_sum"), "all routes", "A"))
            .with_target(query(rate(DURATION + "_sum", ROUTE), "{{http_route}}", "B"))
        )
        .with_panel(
            graph(
                "Loop delay",
                "Lateness of the watchdog heartbeat. max is the upper bound of the highest "
                "bucket that saw a heartbeat (the histogram keeps no exact maximum).",
                "s",
            )
            .with_target(query(quantile(0.5, DELAY), "p50", "A"))
            .with_target(query(quantile(0.99, DELAY), "p99", "B"))
            .with_target(query(quantile(1, DELAY), "max (bucket bound)", "C"))
            .with_target(query(f"{rate(DELAY + '_sum')} / {rate(DELAY + '_count')}", "mean", "D"))
        )
        .with_panel(
            culprit_table(
                "Top culprit lines",
                f"The {TOP} lines of your code that blocked the loop most often in the time "
                "range. Click a row for its incident spans in the traces datasource.",
                route=False,
            )
        )
        .with_panel(
            graph(
                "Victims per stall",
                "Other requests in flight while the loop stalled: they waited too.",
                "short",
            )
            .with_target(
                query(f"{rate(VICTIMS + '_sum')} / {rate(VICTIMS + '_count')}", "mean", "A")
            )
            .with_target(query(quantile(0.99, VICTIMS), "p99", "B"))
        )
        .with_panel(
            graph(
                "loophound health",
                "Dropped incidents and sink failures per second: both should be 0.",
                "short",
            )
            .with_target(query(rate(DROPPED), "dropped events", "A"))
            .with_target(query(rate(FAILURES), "sink failures", "B"))
        )
    )


def route_drill_down() -> dash.Dashboard:
    """One Django route: what blocks in it, where, and for how long."""
    route_variable = (
        dash.QueryVariable("route")
        .label("Route")
        .datasource(PROMETHEUS)
        .query(f"label_values({INCIDENTS}, {ROUTE})")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )
    return (
        base(
            "loophound: route drill-down",
            "loophound-route",
            "What blocks the event loop in one Django route.",
        )
        .with_variable(prometheus_variable())
        .with_variable(traces_variable())
        .with_variable(route_variable)
        .with_panel(
            single(
                "Incidents per second",
                "Incidents in this route.",
                "short",
                rate(INCIDENTS, route=True),
            )
        )
        .with_panel(
            single(
                "Loop blocked",
                "Seconds this route held the loop per second of wall time.",
                "percentunit",
                rate(DURATION + "_sum", route=True),
            )
        )
        .with_panel(
            single(
                "Incident duration p99",
                "99th percentile of how long one incident held the loop.",
                "s",
                quantile(0.99, DURATION, route=True),
            )
        )
        .with_panel(
            graph(
                "Incidents per second by operation", "What blocked in this route.", "short"
            ).with_target(query(rate(INCIDENTS, OPERATION, route=True), "{{loophound_operation}}"))
        )
        .with_panel(
            graph(
                "Incidents per second by culprit line", "Where in your code.", "short"
            ).with_target(query(rate(INCIDENTS, CULPRIT, route=True), "{{loophound_culprit}}"))
        )
        .with_panel(
            graph(
                "Incident duration",
                "Quantiles of how long one incident held the loop, from the histogram's buckets.",
                "s",
            )
            .with_target(query(quantile(0.5, DURATION, route=True), "p50", "A"))
            .with_target(query(quantile(0.9, DURATION, route=True), "p90", "B"))
            .with_target(query(quantile(0.99, DURATION, route=True), "p99", "C"))
        )
        .with_panel(
            graph(
                "Incident duration p99 by operation",
                "Which operation holds the loop longest.",
                "s",
            ).with_target(
                query(quantile(0.99, DURATION, OPERATION, route=True), "{{loophound_operation}}")
            )
        )
        .with_panel(
            graph(
                "Incidents per second by kind",
                "call: a blocking call was caught; stall: the watchdog saw the loop stand "
                "still; slow_callback: asyncio's debug mode timed a callback.",
                "short",
                width=24,
            ).with_target(query(rate(INCIDENTS, KIND, route=True), "{{loophound_kind}}"))
        )
        .with_panel(
            culprit_table(
                "Culprit lines in this route",
                f"The {TOP} lines that blocked the loop most often in this route. Click a row "
                "for its incident spans.",
                route=True,
            )
        )
    )


DASHBOARDS = {"overview.json": overview, "route.json": route_drill_down}


def installed_sdk() -> str:
    """Return the installed grafana-foundation-sdk version."""
    return metadata.version("grafana-foundation-sdk")


def render() -> dict[str, str]:
    """Return every dashboard's file name and JSON text."""
    if installed_sdk() != SDK_VERSION:
        raise SystemExit(
            f"dashboards/build.py: grafana-foundation-sdk {installed_sdk()} is installed; "
            f"these dashboards are built with {SDK_VERSION} (Grafana 11.6 types, "
            f"schemaVersion 41): pip install 'grafana-foundation-sdk=={SDK_VERSION}'"
        )
    rendered: dict[str, str] = {}
    for name, make in DASHBOARDS.items():
        built = make().build()
        for number, panel in enumerate(built.panels or [], start=1):
            panel.id_val = number  # stable ids: links and Grafana's state refer to them
        text = json.dumps(built, cls=JSONEncoder, sort_keys=True, indent=2)
        rendered[name] = text + "\n"
    return rendered


def main(argv: list[str] | None = None) -> int:
    """Write (or, with --check, compare) the dashboards; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}; run python dashboards/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
