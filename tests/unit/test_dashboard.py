"""The Grafana dashboard (k8s/grafana/braze-consumer.json) agrees with the exported metrics.

Every `braze_consumer_*` name in a panel query (rows' nested panels included) or a template
variable query must be a series `consumer.metrics.Metrics` exports: a counter is queried as
`<name>_total`, a histogram as `<name>_bucket`/`_sum`/`_count`, a gauge by its own name and an
Info as `<name>_info`. Panels are well formed and take their data source from `${datasource}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.braze.answers import HoldCause
from consumer.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "k8s" / "grafana" / "braze-consumer.json"

METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])braze_consumer_[a-z_]+")
DATASOURCE_VARIABLES = {"${datasource}", "$datasource"}
# Grafana's own variables, always defined.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s"}
VARIABLE_USE = re.compile(r"\$\{?(\w+)")

# Series each family type exports, as suffixes of the family name (prometheus_client names a
# counter's family without `_total`, an Info's without `_info`).
SERIES_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}

# Metrics added to consumer/metrics.py at the same time as this dashboard (by another engineer).
# test_new_metric_is_shown_and_exported requires each of them, once per name: while one is not
# exported yet that test fails and names it, which is intended (the dashboard already shows it).
# test_every_metric_shown_is_exported leaves these names to it, so its own failures stay real
# mistakes.
NEW_METRICS = {
    "braze_consumer_rules_info": "gauge{hash}: 1 for the loaded rules' hash",
    "braze_consumer_rules_reloads_total": "counter{result}: rules reloads",
    "braze_consumer_committed_offset": "gauge{topic,partition}: committed offset",
    "braze_consumer_lag_seconds": "gauge{topic,partition}: age of the oldest unsettled event",
}

Json = dict[str, Any]


# --- reading the dashboard -------------------------------------------------------------------


def load_dashboard() -> Json:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{DASHBOARD}: the model is not a JSON object"
    return data


def walk_panels(panels: list[Json]) -> Iterator[Json]:
    """Every panel, rows included, then each row's nested panels (a collapsed row keeps its
    panels under `panels`; an expanded row's panels follow it at the top level)."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def is_row(panel: Json) -> bool:
    return panel.get("type") == "row"


def variables(dashboard: Json) -> list[Json]:
    found: list[Json] = dashboard.get("templating", {}).get("list", [])
    return found


def variable_query(variable: Json) -> str:
    """A query variable's PromQL: a string, or the query editor's object form."""
    query = variable.get("query", "")
    if isinstance(query, dict):
        return str(query.get("query", ""))
    return str(query)


def queries(dashboard: Json) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in walk_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('id')} {panel.get('title')!r} target {target.get('refId')}"
            yield where, str(target.get("expr", ""))
    for variable in variables(dashboard):
        if variable.get("type") == "query":
            yield f"variable ${variable.get('name')}", variable_query(variable)


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


def referenced_metrics(dashboard: Json) -> dict[str, list[str]]:
    """Series name -> where the dashboard queries it."""
    found: dict[str, list[str]] = {}
    for where, expr in queries(dashboard):
        for name in metric_names(expr):
            found.setdefault(name, []).append(where)
    return found


# --- what the service exports ----------------------------------------------------------------


def exercised_metrics() -> Metrics:
    """A Metrics with one of everything, so labelled families have samples to look at too."""
    metrics = Metrics(wall_clock=lambda: 1_700_000_000.0)
    metrics.event_consumed("events")
    metrics.event_matched("welcome")
    metrics.event_skipped("welcome", "filtered")
    metrics.dead_lettered(None, "invalid_json")
    metrics.request_done("/canvas/trigger/send", 201, 0.2, 50, True)
    metrics.request_done("/canvas/trigger/send", 429, 0.1, 50, False)
    metrics.retry_scheduled("/canvas/trigger/send", "429")
    metrics.rate_limit_wait(0.5)
    metrics.dlq_write_failed()
    metrics.set_holding(HoldCause.OUTAGE)
    metrics.hold_probe(ok=False)
    metrics.already_settled("events")
    metrics.target_rejected("welcome", "canvas-1")
    metrics.committed(2)
    metrics.set_lag("events", 0, 10)
    metrics.set_lag_seconds("events", 0, 4.5)
    metrics.set_committed_offset("events", 0, 1_000)
    metrics.rules_loaded("0123abcd")
    metrics.rules_reload(ok=True)
    metrics.set_in_flight_events(3)
    metrics.set_in_flight_requests(1)
    metrics.set_buffered(20, 1)
    metrics.set_paused_partitions(1)
    metrics.set_ready(True)
    return metrics


def exported_series(metrics: Metrics) -> dict[str, tuple[str, str]]:
    """Series name -> (family name, family type) of everything the registry exports."""
    series: dict[str, tuple[str, str]] = {}
    for family in metrics.registry.collect():
        for suffix in SERIES_SUFFIXES.get(family.type, ("",)):
            series[family.name + suffix] = (family.name, family.type)
        for sample in family.samples:
            series[sample.name] = (family.name, family.type)
    return series


def why_not_exported(name: str, series: dict[str, tuple[str, str]]) -> str:
    """A hint for a name the service does not export: usually a suffix the type does not have."""
    families = dict(series.values())
    suffixes = ("_total", "_bucket", "_sum", "_count", "_info")
    for base in (name, *(name.removesuffix(s) for s in suffixes if name.endswith(s))):
        if base in families:
            kind = families[base]
            shown = ", ".join(base + s for s in SERIES_SUFFIXES.get(kind, ("",)) if s != "_created")
            return f"{base} is a {kind}: query one of {shown}"
    return "no such metric in consumer/metrics.py"


@pytest.fixture(scope="module")
def dashboard() -> Json:
    return load_dashboard()


@pytest.fixture(scope="module")
def series() -> dict[str, tuple[str, str]]:
    return exported_series(exercised_metrics())


# --- the checker itself ----------------------------------------------------------------------


def test_metric_names_are_extracted_with_their_series_suffix() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le) (rate("
        'braze_consumer_request_duration_seconds_bucket{job=~"$job"}[5m])))'
        " / on() group_left sum(rate(braze_consumer_requests_total[5m]))"
        " + count(braze_consumer_up) + not_braze_consumer_up"
    )
    assert metric_names(expr) == {
        "braze_consumer_request_duration_seconds_bucket",
        "braze_consumer_requests_total",
        "braze_consumer_up",
    }


def test_series_names_follow_the_family_type(series: dict[str, tuple[str, str]]) -> None:
    # Counters only as _total, histograms only as _bucket/_sum/_count, gauges bare, Info as _info.
    assert series["braze_consumer_events_consumed_total"][1] == "counter"
    assert "braze_consumer_events_consumed" not in series
    assert series["braze_consumer_request_duration_seconds_bucket"][1] == "histogram"
    assert "braze_consumer_request_duration_seconds" not in series
    assert series["braze_consumer_lag_messages"][1] == "gauge"
    assert "braze_consumer_lag_messages_total" not in series
    assert series["braze_consumer_build_info"][1] == "info"
    assert why_not_exported("braze_consumer_events_consumed", series).startswith(
        "braze_consumer_events_consumed is a counter"
    )


# --- the dashboard ---------------------------------------------------------------------------


def test_dashboard_is_a_grafana_model_with_template_variables(dashboard: Json) -> None:
    assert dashboard.get("title")
    assert dashboard.get("uid")
    assert 36 <= dashboard.get("schemaVersion", 0) <= 41, "schemaVersion of Grafana 9 to 11"
    by_name = {v.get("name"): v for v in variables(dashboard)}
    source = by_name.get("datasource")
    assert source is not None, "no `datasource` template variable"
    assert source.get("type") == "datasource"
    assert source.get("query") == "prometheus"
    for name in ("namespace", "job", "instance"):
        assert name in by_name, f"no `{name}` template variable"
        assert by_name[name].get("type") == "query"
        assert by_name[name].get("datasource", {}).get("uid") in DATASOURCE_VARIABLES


def test_panels_have_a_title_a_unique_id_a_grid_position_and_targets(dashboard: Json) -> None:
    problems: list[str] = []
    seen: dict[int, str] = {}
    for panel in walk_panels(dashboard["panels"]):
        title = panel.get("title")
        label = f"panel {panel.get('id')} {title!r}"
        if not isinstance(title, str) or not title.strip():
            problems.append(f"{label}: no title")
        panel_id = panel.get("id")
        if not isinstance(panel_id, int):
            problems.append(f"{label}: no integer id")
        elif panel_id in seen:
            problems.append(f"{label}: id also used by {seen[panel_id]!r}")
        else:
            seen[panel_id] = str(title)
        grid = panel.get("gridPos")
        if not isinstance(grid, dict) or not {"x", "y", "w", "h"} <= grid.keys():
            problems.append(f"{label}: no gridPos with x, y, w and h")
        elif grid["x"] + grid["w"] > 24:
            problems.append(f"{label}: gridPos runs past the 24 columns")
        if is_row(panel):  # a row only groups panels: it queries nothing
            continue
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{label}: no target")
        for target in targets:
            if not str(target.get("expr", "")).strip():
                problems.append(f"{label}: target {target.get('refId')} has no expr")
        ref_ids = [t.get("refId") for t in targets]
        if len(ref_ids) != len(set(ref_ids)):
            problems.append(f"{label}: refIds repeat: {ref_ids}")
    assert not problems, "\n".join(problems)


def test_no_hard_coded_data_source(dashboard: Json) -> None:
    """Every data source reference is the `${datasource}` variable, never a uid of one
    Grafana; panels and targets name it explicitly rather than fall back to the default."""
    problems: list[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    uid = value.get("uid") if isinstance(value, dict) else value
                    if uid not in DATASOURCE_VARIABLES:
                        problems.append(f"{path}.datasource = {value!r}")
                visit(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{path}[{i}]")

    visit(dashboard, "$")
    for panel in walk_panels(dashboard["panels"]):
        if is_row(panel):
            continue
        label = f"panel {panel.get('id')} {panel.get('title')!r}"
        if "datasource" not in panel:
            problems.append(f"{label}: no datasource")
        problems.extend(
            f"{label} target {t.get('refId')}: no datasource"
            for t in panel.get("targets", [])
            if "datasource" not in t
        )
    assert "__inputs" not in dashboard, "an export for sharing: import it, then save the model"
    assert not problems, "\n".join(problems)


def test_queries_use_only_defined_variables(dashboard: Json) -> None:
    defined = {str(v.get("name")) for v in variables(dashboard)} | BUILTIN_VARIABLES
    problems = [
        f"{where}: ${name} is not a template variable"
        for where, expr in queries(dashboard)
        for name in VARIABLE_USE.findall(expr)
        if name not in defined
    ]
    assert not problems, "\n".join(problems)


def test_every_metric_shown_is_exported(
    dashboard: Json, series: dict[str, tuple[str, str]]
) -> None:
    """NEW_METRICS are left to test_new_metric_is_shown_and_exported, so that this test names
    only real mistakes while they are being added."""
    referenced = referenced_metrics(dashboard)
    assert referenced, "the dashboard queries no braze_consumer_ metric"
    missing = [
        f"{name} ({why_not_exported(name, series)}), queried by: {'; '.join(where)}"
        for name, where in sorted(referenced.items())
        if name not in series and name not in NEW_METRICS
    ]
    assert not missing, "the dashboard queries series the service does not export:\n" + (
        "\n".join(missing)
    )


# Fails for each NEW_METRICS name consumer/metrics.py does not export yet (another engineer adds
# them): intended, so the dashboard cannot show a metric the code never lands, or lands renamed.
@pytest.mark.parametrize("name", sorted(NEW_METRICS))
def test_new_metric_is_shown_and_exported(
    name: str, dashboard: Json, series: dict[str, tuple[str, str]]
) -> None:
    assert name in referenced_metrics(dashboard), f"the dashboard does not show {name}"
    assert name in series, (
        f"{name} ({NEW_METRICS[name]}) is shown on the dashboard but not exported by "
        f"consumer.metrics.Metrics: {why_not_exported(name, series)}"
    )
