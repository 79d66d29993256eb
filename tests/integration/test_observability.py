"""Every dashboard panel and every Prometheus rule against the real system.

The detector and the review API run as processes on a real broker and free ports; a
stream of simulated transactions (with malformed records and chargebacks) flows through
them, an analyst decides an alert and an admin sends a control message over HTTP. A real
Prometheus, configured from deploy/prometheus/prometheus.yml (targets, a 1 s scrape and
evaluation interval, the repository's rules), scrapes both. Then, through Prometheus's
HTTP API:

* every query of every Grafana panel and variable (with Grafana's variables replaced
  as Grafana would: ``$__rate_interval`` -> 1m, ``$model`` -> ``.*``) must be valid
  and return at least one series, so that no panel shows "No data";
* every recording rule's expression, and the series it records, must return data;
* every alert rule's expression must be valid. An alert that is not firing returns
  nothing by design, so "returns data" is checked on its parts instead: the expression
  is split at its outermost comparisons and ``and``/``or``/``unless`` (the thresholds,
  number literals, are dropped), and each remaining operand - the left-hand side that
  is compared with the threshold, and the other conditions - must return data. Every
  metric name the rule selects must exist as well. Together this catches a misspelt
  metric, a wrong label matcher and a join (``on (...)``) that matches nothing;
* Prometheus must report every rule healthy (no evaluation error, e.g. a many-to-many
  match) and both scrape targets up;
* ``promtool check config`` must accept the generated configuration.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from detector.contracts import Label, Transaction
from detector.local.broker_config import find_free_ports
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.kafka_io import produce
from tests.integration.processes import detector_process, service_env, wait_until
from tests.integration.test_api_kafka import ADMIN, ANALYST, KEYS
from tests.ops import (
    RULES_DIR,
    DashboardQuery,
    Prometheus,
    PrometheusError,
    alert_rules,
    dashboard_files,
    dashboard_queries,
    metric_names,
    operands,
    promtool,
    recording_rules,
    render_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MALFORMED = [b"not json", b'{"transaction_id": "x"}', b"[1, 2, 3]"]
HISTORY = 2500  # transactions before the services start
STREAM_PER_TICK = 20  # then this many every 0.25 s, until the end of the test


def simulated() -> Iterator[tuple[Transaction, bool]]:
    """Transactions of a small simulated population, with their ground truth."""
    config = SimulationConfig(n_customers=300, n_terminals=600, seed=11)
    for record in simulate(config):
        yield record.transaction, bool(record.is_fraud)


class Feed:
    """Publishes transactions (every 50th record malformed) and the chargebacks of frauds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.records = simulated()
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._stream, daemon=True)

    def send(self, count: int) -> None:
        txs: list[tuple[str | None, bytes]] = []
        labels: list[tuple[str | None, bytes]] = []
        for tx, is_fraud in itertools.islice(self.records, count):
            self.sent += 1
            txs.append((tx.card_id, tx.model_dump_json().encode()))
            if is_fraud:
                label = Label(
                    transaction_id=tx.transaction_id,
                    card_id=tx.card_id,
                    label="fraud",
                    source="chargeback",
                    labeled_at=datetime.now(UTC),
                )
                labels.append((label.card_id, label.model_dump_json().encode()))
            if self.sent % 50 == 0:
                txs.append((None, MALFORMED[self.sent // 50 % len(MALFORMED)]))
        produce(self.settings, self.settings.kafka.topic_transactions, txs)
        if labels:
            produce(self.settings, self.settings.kafka.topic_labels, labels)

    def _stream(self) -> None:
        while not self.stop.wait(0.25):
            self.send(STREAM_PER_TICK)

    def __enter__(self) -> Feed:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def api_process(
    settings: Settings, tmp_path: Path, port: int, log: Path
) -> subprocess.Popen[bytes]:
    """``python -m detector api`` on ``port``, on the test's broker and topics."""
    env = {
        **os.environ,
        "FRAUDSTREAM_HOME": str(tmp_path / "home"),
        "FRAUDSTREAM_DATABASE_URL": f"sqlite:///{tmp_path / 'review.db'}",
        "FRAUDSTREAM_API_KEYS": KEYS,
        "FRAUDSTREAM_API_HOST": "127.0.0.1",
        "FRAUDSTREAM_API_PORT": str(port),
        "FRAUDSTREAM_OUTBOX_INTERVAL_SECONDS": "0.2",
        "FRAUDSTREAM_LOG_LEVEL": "WARNING",
        **service_env(settings),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "detector", "api"], env=env, stdout=out, stderr=out
        )


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one sample, and at least one that is a number (not NaN)."""
    return any(not math.isnan(float(r["value"][1])) for r in result)


def test_every_panel_and_rule_returns_data_from_the_live_system(
    unique_topics: Settings, tmp_path: Path
) -> None:
    settings = unique_topics
    feed = Feed(settings)
    feed.send(HISTORY)
    metrics_port, api_port = find_free_ports(1)[0], find_free_ports(1)[0]
    detector_log, api_log = tmp_path / "detector.log", tmp_path / "api.log"
    detector = detector_process(
        settings,
        tmp_path,
        detector_log,
        {
            "FRAUDSTREAM_METRICS_PORT": str(metrics_port),
            "FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "0.5",
            "FRAUDSTREAM_PRESUME_LEGIT_DAYS": "1",
            "FRAUDSTREAM_REVIEW_SHARE": "0.02",
            "FRAUDSTREAM_QUALITY_WINDOW": "500",
            # a short run: figures over a few labels, so that every quality panel has data
            "FRAUDSTREAM_QUALITY_MIN_FRAUDS": "1",
            "FRAUDSTREAM_QUALITY_MIN_LEGIT": "1",
            "FRAUDSTREAM_QUALITY_MIN_ALERTS": "1",
        },
    )
    api = api_process(settings, tmp_path, api_port, api_log)

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for path in RULES_DIR.glob("*.yml"):
        (rules_dir / path.name).write_text(path.read_text())
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            render_config(f"127.0.0.1:{metrics_port}", f"127.0.0.1:{api_port}", rules_dir)
        )
    )
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10)
    analyst, admin = {"X-API-Key": ANALYST}, {"X-API-Key": ADMIN}
    try:
        with feed, Prometheus(config, tmp_path) as prometheus:

            def api_get(path: str) -> Any:
                # Polling the API also keeps its request metrics moving.
                try:
                    response = client.get(path, headers=analyst)
                except httpx.TransportError:
                    return None
                assert api.poll() is None, api_log.read_text()[-3000:]
                return response.json() if response.status_code == 200 else None

            def deciding_model() -> dict[str, Any] | None:
                models = api_get("/api/models") or []
                status = next((m["status"] for m in models if m["status"]["deciding"]), None)
                quality = status and status["quality"]
                return status if quality and quality.get("auc") is not None else None

            status = wait_until(
                "a deciding model with an AUC", deciding_model, detector, detector_log
            )

            def open_alert() -> dict[str, Any] | None:
                page = api_get("/api/alerts?status=open") or {"items": []}
                return next(iter(page["items"]), None)

            alert = wait_until("an open alert", open_alert, detector, detector_log)

            def scraped(expr: str) -> Any:
                def check() -> bool:
                    api_get("/api/queue/stats")
                    up = prometheus.targets_up()
                    return bool(up) and all(up.values()) and bool(prometheus.query(expr))

                return check

            # Counters must be scraped before they move, for increase() to see the move.
            wait_until(
                "the verdict counters scraped",
                scraped("fraudstream_api_verdicts_total and on () fraudstream_model_auc"),
                detector,
                detector_log,
                60,
            )
            url = f"/api/alerts/{alert['alert_id']}"
            assert client.post(f"{url}/claim", headers=analyst).status_code == 200
            verdict = client.post(f"{url}/verdict", headers=analyst, json={"label": "fraud"})
            assert verdict.status_code == 200, verdict.text

            def choose_deciding() -> None:
                body = {"model_name": status["model_name"]}
                control = client.put("/api/models/deciding", headers=admin, json=body)
                assert control.status_code == 202, control.text

            # A shadow rule that matches everything: its hits feed the rule panels.
            rule = {"expression": "amount > 0.0", "outcome": "review", "mode": "shadow"}
            put = client.put("/api/rules/everything", headers=admin, json=rule)
            assert put.status_code == 202, put.text
            # Controls are counted by action from the first one on: send two, scraped between.
            choose_deciding()
            wait_until(
                "the first control scraped",
                scraped("fraudstream_api_controls_total"),
                detector,
                detector_log,
                60,
            )
            choose_deciding()
            wait_until(
                "the verdict and the controls delivered and scraped",
                # The verdict's label and the two control messages went through the outbox.
                scraped(
                    "fraudstream_api_outbox_delivered_total >= 4"
                    " and on () sum(fraudstream_api_controls_total) >= 2"
                ),
                detector,
                detector_log,
                60,
            )
            # A few more scrapes and rule evaluations with the streams flowing.
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                api_get("/api/alerts")
                time.sleep(0.5)

            problems = check_everything(prometheus)
            assert not problems, "\n".join(problems)
            assert prometheus.targets_up() == {
                "fraudstream-detector": True,
                "fraudstream-api": True,
            }
    finally:
        client.close()
        for proc in (api, detector):
            proc.terminate()
        for proc in (api, detector):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def check_everything(prometheus: Prometheus) -> list[str]:
    """Every problem found with the dashboards' queries and the rules (empty: none)."""
    problems: list[str] = []

    def returns_data(where: str, expr: str) -> None:
        try:
            result = prometheus.query(expr)
        except PrometheusError as error:
            problems.append(f"{where}: invalid: {expr}\n    {error}")
            return
        if not has_data(result):
            problems.append(f"{where}: no data: {expr}  ->  {json.dumps(result)[:200]}")

    queries: list[DashboardQuery] = [
        q for path in dashboard_files() for q in dashboard_queries(path)
    ]
    assert len(queries) > 50
    for query in queries:
        returns_data(query.where, query.promql)

    for rule in recording_rules():
        where = f"record {rule['record']}"
        returns_data(where, rule["expr"])
        matchers = ", ".join(f'{k}="{v}"' for k, v in rule.get("labels", {}).items())
        returns_data(where + " (recorded)", f"{rule['record']}{{{matchers}}}")

    for rule in alert_rules():
        where = f"alert {rule['alert']}"
        try:
            prometheus.query(rule["expr"])  # valid; firing or not
        except PrometheusError as error:
            problems.append(f"{where}: invalid: {rule['expr']}\n    {error}")
            continue
        parts = operands(rule["expr"])
        assert parts, where
        for part in parts:
            returns_data(f"{where} (operand)", part)
        for name in metric_names(rule["expr"]):
            returns_data(f"{where} (metric)", f'count({{__name__="{name}"}})')

    for rule in prometheus.rules():
        if rule.get("health") != "ok":
            problems.append(f"rule {rule['name']}: {rule.get('health')}: {rule.get('lastError')}")
    return problems
