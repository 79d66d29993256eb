"""Everything over SASL: a broker with a SASL_PLAINTEXT (PLAIN) listener, topics created,
transactions published, the detector run and the review service fed through it with the
credentials in ``FRAUDSTREAM_KAFKA_EXTRA_CONFIG``; without them nothing can be read."""

from __future__ import annotations

import itertools
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from fastapi.testclient import TestClient

from api.main import create_app
from detector.contracts import Alert, Decision, Transaction
from detector.kafka_config import consumer_config
from detector.local.broker import LocalBroker
from detector.local.topics import create_topics
from detector.replay.publishing import publish
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.conftest import sasl_settings_of
from tests.integration.kafka_io import consume_all
from tests.integration.processes import detector_process, wait_until
from tests.integration.test_api_kafka import alert_ids, review_settings, wait_for

pytestmark = pytest.mark.slow

TRANSACTIONS = 40


@dataclass
class Detected:
    """The detector running over SASL, after it decided ``transactions``."""

    settings: Settings
    transactions: list[Transaction]
    created: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def detected(
    sasl_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Detected]:
    """Topics created, transactions published and the detector run, all through SASL."""
    settings = sasl_settings_of(sasl_broker)
    created = create_topics(settings)
    tmp_path = tmp_path_factory.mktemp("sasl-detector")
    log = tmp_path / "detector.log"
    process = detector_process(
        settings,
        tmp_path,
        log,
        {
            "FRAUDSTREAM_KAFKA_EXTRA_CONFIG": json.dumps(settings.kafka.kafka_extra_config),
            # Every transaction is reviewed: each one makes an alert.
            "FRAUDSTREAM_THRESHOLD_MODE": "fixed",
            "FRAUDSTREAM_REVIEW_THRESHOLD": "0",
            "FRAUDSTREAM_BLOCK_THRESHOLD": "1",
        },
    )
    try:
        records = list(
            itertools.islice(
                simulate(SimulationConfig(n_customers=50, n_terminals=100, seed=3)), TRANSACTIONS
            )
        )
        stats = publish(records, settings)
        assert (stats.transactions, stats.errors) == (TRANSACTIONS, 0)
        wait_until(
            "a decision for every transaction",
            lambda: len(consume_all(settings, settings.kafka.topic_decisions)) >= TRANSACTIONS,
            process,
            log,
        )
        yield Detected(settings, [r.transaction for r in records], created, process, log)
    finally:
        process.terminate()
        process.wait(30)


def test_the_detector_reads_and_writes_through_sasl(detected: Detected) -> None:
    settings = detected.settings
    assert detected.created == dict.fromkeys(settings.kafka.topics, "created")
    expected = {tx.transaction_id for tx in detected.transactions}

    decisions = [
        Decision.model_validate_json(v)
        for v in consume_all(settings, settings.kafka.topic_decisions)
    ]
    assert sorted(d.transaction_id for d in decisions) == sorted(expected)
    alerts = [
        Alert.model_validate_json(v) for v in consume_all(settings, settings.kafka.topic_alerts)
    ]
    assert {a.transaction.transaction_id for a in alerts} == expected
    assert detected.process.poll() is None, detected.log.read_text()[-3000:]


def test_an_alert_reaches_the_review_queue_through_sasl(detected: Detected, tmp_path: Path) -> None:
    settings = review_settings(detected.settings, tmp_path)
    alerts = {
        Alert.model_validate_json(v).alert_id
        for v in consume_all(settings, settings.kafka.topic_alerts)
    }
    with TestClient(create_app(settings)) as client:
        wait_for("the detector's alerts in the queue", lambda: alert_ids(client) >= alerts)


@pytest.mark.parametrize("credentials", ["none", "wrong password"])
def test_without_the_credentials_nothing_is_read(detected: Detected, credentials: str) -> None:
    settings = detected.settings
    extra = (
        {} if credentials == "none" else {**settings.kafka.kafka_extra_config, "sasl.password": "x"}
    )
    outsider = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"kafka_extra_config": extra})}
    )
    consumer = Consumer(consumer_config(outsider, **{"group.id": f"outsider-{uuid.uuid4().hex}"}))
    try:
        with pytest.raises(KafkaException):
            consumer.list_topics(settings.kafka.topic_decisions, timeout=5)
        consumer.assign([TopicPartition(settings.kafka.topic_decisions, 0, 0)])
        read = [m for m in consumer.consume(100, timeout=5) if m.error() is None]
        assert read == []
    finally:
        consumer.close()
    # The same records are there for a client with the credentials.
    assert len(consume_all(settings, settings.kafka.topic_decisions)) >= TRANSACTIONS
