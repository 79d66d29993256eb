"""The Grafana dashboards and provisioning: structure, the data source by uid, units, and
metric names that exist.

Whether each query parses and returns data is proven against a live system in
tests/integration/test_observability.py (PromQL has no offline parser).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from api.metrics import ApiMetrics, QueueGauges
from detector.metrics import DetectorMetrics
from tests.ops import (
    DASHBOARDS_DIR,
    DATASOURCE_UID,
    GRAFANA_DIR,
    dashboard_files,
    dashboard_queries,
    load_dashboard,
    load_rules,
    metric_names,
    panels,
)

DASHBOARDS = {
    "overview.json": "fraudstream-overview",
    "model-quality.json": "fraudstream-model-quality",
    "review-queue.json": "fraudstream-review-queue",
}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


def sample_names() -> set[str]:
    """Every series name the detector's and the API's /metrics can serve."""
    import bytewax.connectors.kafka  # noqa: F401  (registers bytewax_kafka_consumer_lag)

    api = ApiMetrics(
        lambda: QueueGauges(open_alerts=0, oldest_open_age_seconds=None, outbox_pending=0)
    )
    names = {"up"}
    for registry in (DetectorMetrics().registry, api.registry, REGISTRY):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def recorded_names() -> set[str]:
    return {rule["record"] for rule in load_rules() if "record" in rule}


def graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


@pytest.fixture(scope="module", params=sorted(DASHBOARDS))
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_dashboard(DASHBOARDS_DIR / request.param)


def test_the_three_dashboards_with_unique_uids() -> None:
    found = {path.name: load_dashboard(path)["uid"] for path in dashboard_files()}
    assert found == DASHBOARDS
    titles = [load_dashboard(path)["title"] for path in dashboard_files()]
    assert len(set(titles)) == len(titles)


def test_the_json_is_formatted_as_written(dashboard: dict[str, Any]) -> None:
    path = DASHBOARDS_DIR / next(n for n, u in DASHBOARDS.items() if u == dashboard["uid"])
    # Two-space indentation, as Grafana exports it: diffs stay readable.
    assert path.read_text() == json.dumps(dashboard, indent=2) + "\n"


def test_dashboard_basics(dashboard: dict[str, Any]) -> None:
    assert 39 <= dashboard["schemaVersion"] <= 41
    assert dashboard["id"] is None  # provisioned: Grafana assigns ids
    assert "fraudstream" in dashboard["tags"]
    assert dashboard["title"].startswith("fraudstream / ")


def test_panel_ids_are_unique_and_panels_fit_the_grid(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        assert panel.get("title"), panel["id"]


def test_every_panel_and_target_uses_the_datasource_by_uid(dashboard: dict[str, Any]) -> None:
    for panel in graph_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE_UID, variable["name"]


def test_targets_have_refids_and_expressions(dashboard: dict[str, Any]) -> None:
    for panel in graph_panels(dashboard):
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_every_panel_has_a_unit_and_a_description(dashboard: dict[str, Any]) -> None:
    units = {
        "short",
        "none",
        "ops",
        "reqps",
        "s",
        "percentunit",
    }
    for panel in graph_panels(dashboard):
        assert panel["fieldConfig"]["defaults"].get("unit") in units, panel["title"]
        assert panel.get("description"), panel["title"]


def test_queries_use_known_variables_and_balanced_brackets() -> None:
    for path in dashboard_files():
        for query in dashboard_queries(path):
            promql = query.promql
            assert "$" not in promql, f"{query.where}: unknown variable in {promql}"
            for opening, closing in ("()", "{}", "[]"):
                assert promql.count(opening) == promql.count(closing), query.where


def test_every_metric_used_exists_in_the_code_or_is_recorded() -> None:
    known = sample_names() | recorded_names()
    used: dict[str, str] = {}
    for path in dashboard_files():
        for query in dashboard_queries(path):
            used.update(dict.fromkeys(metric_names(query.promql), query.where))
    for rule in load_rules():
        used.update(dict.fromkeys(metric_names(rule["expr"]), rule.get("alert") or rule["record"]))
    unknown = {name: where for name, where in used.items() if name not in known}
    assert not unknown, unknown


def _metrics_of(uid: str) -> set[str]:
    path = DASHBOARDS_DIR / next(n for n, u in DASHBOARDS.items() if u == uid)
    return set().union(*(metric_names(q.promql) for q in dashboard_queries(path)))


def test_each_dashboard_shows_what_it_is_for() -> None:
    assert {
        "fraudstream_transactions_total",
        "fraudstream_processing_latency_seconds_bucket",
        "fraudstream_event_time_lag_seconds_bucket",
        "bytewax_kafka_consumer_lag",
        "fraudstream_dead_letters_total",
    } <= _metrics_of("fraudstream-overview")
    assert {
        "fraudstream_model_auc",
        "fraudstream_model_average_precision",
        "fraudstream_model_alert_precision",
        "fraudstream_labels_total",
        "fraudstream_label_delay_seconds_bucket",
        "fraudstream_score_bucket",
        "fraudstream_model_review_threshold",
        "fraudstream_model_block_threshold",
    } <= _metrics_of("fraudstream-model-quality")
    assert {
        "fraudstream_api_queue_open_alerts",
        "fraudstream_api_queue_oldest_open_age_seconds",
        "fraudstream_api_verdicts_total",
        "fraudstream_api_outbox_pending",
        "fraudstream_api_http_requests_total",
        "fraudstream_api_http_request_duration_seconds_bucket",
    } <= _metrics_of("fraudstream-review-queue")


def test_the_datasource_is_provisioned_with_the_uid_and_a_url_from_the_environment() -> None:
    config = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = config["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    assert re.fullmatch(r"\$\{?PROMETHEUS_URL\}?", source["url"])


def test_the_compose_file_sets_the_prometheus_url_if_present() -> None:
    compose = GRAFANA_DIR.parent / "docker-compose.yml"
    if not compose.exists():
        pytest.skip("no deploy/docker-compose.yml")
    grafana = yaml.safe_load(compose.read_text())["services"]["grafana"]
    assert grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"


def test_the_dashboard_provider_reads_the_mounted_folder() -> None:
    config = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/fraudstream.yml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]) == Path("/var/lib/grafana/dashboards")


QUALITY_FIGURES = (
    "fraudstream_model_auc",
    "fraudstream_model_average_precision",
    "fraudstream_model_alert_precision",
    "fraudstream_model_alert_recall",
)


def test_quality_panels_say_too_few_labels_when_the_figure_is_absent() -> None:
    # Below the minimum of labels the detector publishes no quality gauge: every panel
    # showing one says why, rather than "No data" or a figure from earlier.
    quality = [
        panel
        for path in dashboard_files()
        for panel in graph_panels(load_dashboard(path))
        if any(name in t["expr"] for t in panel["targets"] for name in QUALITY_FIGURES)
    ]
    assert len(quality) >= 5
    for panel in quality:
        assert panel["fieldConfig"]["defaults"].get("noValue") == "too few labels", panel["title"]
        if panel["type"] == "stat":  # the figure now, not the last before it went absent
            assert all(t.get("instant") for t in panel["targets"]), panel["title"]
