"""The detector process's /metrics against a real broker, scraped over HTTP."""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from detector.contracts import Label
from detector.local.broker_config import find_free_ports
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.kafka_io import produce
from tests.integration.processes import detector_process, wait_until

pytestmark = pytest.mark.slow

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> tuple[str, Samples] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((dict(s.labels), s.value))
    return text, found


def total(found: Samples, name: str, **labels: str) -> float:
    return sum(
        v for lab, v in found.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_metrics_count_what_was_sent(unique_topics: Settings, tmp_path: Path) -> None:
    settings = unique_topics
    port = find_free_ports(1)[0]
    log = tmp_path / "detector.log"
    proc = detector_process(
        settings,
        tmp_path,
        log,
        {"FRAUDSTREAM_METRICS_PORT": str(port), "FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "0.5"},
    )
    try:
        wait_until("the metrics endpoint", lambda: scrape(port), proc, log)
        records = list(
            itertools.islice(
                simulate(SimulationConfig(n_customers=60, n_terminals=120, seed=11)), 300
            )
        )
        txs = [r.transaction for r in records]
        batch: list[tuple[str | None, bytes]] = [
            (tx.card_id, tx.model_dump_json().encode()) for tx in txs
        ]
        batch.insert(150, ("card-bad", b'{"transaction_id": "x", '))
        produce(settings, settings.kafka.topic_transactions, batch)
        labelled = txs[42]
        label = Label(
            transaction_id=labelled.transaction_id,
            card_id=labelled.card_id,
            label="fraud",
            source="analyst",
            labeled_at=datetime.now(UTC),
        )
        produce(
            settings,
            settings.kafka.topic_labels,
            [(label.card_id, label.model_dump_json().encode())],
        )

        def settled() -> tuple[str, Samples] | None:
            got = scrape(port)
            if got is None:
                return None
            _text, found = got
            done = (
                total(found, "fraudstream_transactions_total") == len(txs)
                and total(found, "fraudstream_labels_total", source="analyst") == 1
                and "bytewax_kafka_consumer_lag" in found
                and total(found, "fraudstream_model_transactions_scored_total") >= len(txs)
                # the model status that follows the label learned (statuses come every
                # half second, a label may be learned just after one)
                and total(found, "fraudstream_model_labels_learned_total", label="fraud") == 1
            )
            return got if done else None

        text, found = wait_until("the metrics to count everything sent", settled, proc, log)
    finally:
        stop(proc)
    (tmp_path / "metrics.txt").write_text(text)  # kept for a look when a check fails

    assert total(found, "fraudstream_transactions_total") == len(txs)
    assert total(found, "fraudstream_dead_letters_total") == 1
    assert total(found, "fraudstream_dead_letters_total", reason="not_json") == 1
    assert total(found, "fraudstream_labels_total", source="analyst") == 1
    assert total(found, "fraudstream_label_delay_seconds_count", source="analyst") == 1
    alerts = total(found, "fraudstream_alerts_total")
    assert alerts == len(txs) - total(found, "fraudstream_transactions_total", decision="allow")
    assert total(found, "fraudstream_processing_latency_seconds_count") == len(txs)
    assert total(found, "fraudstream_event_time_lag_seconds_count") == len(txs)
    assert total(found, "fraudstream_score_count") == len(txs)

    info = found["fraudstream_model_info"]
    assert [(lab["model"], lab["deciding"]) for lab, _ in info] == [("hybrid-tail-logreg", "true")]
    assert total(found, "fraudstream_model_labels_learned_total", label="fraud") == 1
    assert total(found, "fraudstream_state_cards") == len({t.card_id for t in txs})
    assert total(found, "fraudstream_state_terminals") == len({t.terminal_id for t in txs})
    assert total(found, "fraudstream_state_pending_labels") == len(txs)

    lags = found["bytewax_kafka_consumer_lag"]
    assert {lab["topic"] for lab, _ in lags} >= {settings.kafka.topic_transactions}
    assert all(v >= 0 for _, v in lags)
    # Bounded labels only: no transaction, card or terminal ids in any series.
    ids = {t.transaction_id for t in txs} | {t.card_id for t in txs} | {t.terminal_id for t in txs}
    for name, series in found.items():
        for lab, _ in series:
            assert not ids & set(lab.values()), (name, lab)


def test_a_metrics_port_in_use_stops_the_detector_with_a_plain_message(
    unique_topics: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "detector.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        proc = detector_process(
            unique_topics, tmp_path, log, {"FRAUDSTREAM_METRICS_PORT": str(port)}
        )
        try:
            code = proc.wait(60)
        finally:
            stop(proc)
    output = log.read_text()
    assert code != 0
    assert f"127.0.0.1:{port}" in output and "already in use" in output, output
    assert "Traceback" not in output, output
