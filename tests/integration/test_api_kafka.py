"""The review service against a real broker: alerts in, labels and controls out, and a
broker outage that loses no verdict and duplicates none."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api import review
from api.main import create_app
from detector.contracts import Control, Label
from detector.local.broker import LocalBroker
from detector.local.broker_config import find_free_ports
from detector.local.topics import create_topics
from detector.settings import KafkaSettings, LocalSettings, Settings
from tests.factories import settings_with
from tests.integration.kafka_io import produce
from tests.unit.test_api import make_alert, make_status

ADMIN = "admin-key-0123456789abcdef"
ANALYST = "analyst-key-0123456789abcdef"
KEYS = f"admin:ada:{ADMIN},analyst:ann:{ANALYST}"


def review_settings(kafka: Settings, home: Path) -> Settings:
    return settings_with(
        kafka,
        database_url=f"sqlite:///{home / 'review.db'}",
        api_keys=SecretStr(KEYS),
        outbox_interval_seconds=0.2,
    )


def read_all(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of everything on ``topic`` now."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    records: list[tuple[bytes | None, bytes]] = []
    try:
        for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            tp = TopicPartition(topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            while True:
                msg = consumer.poll(5)
                assert msg is not None and msg.error() is None
                records.append((msg.key(), msg.value()))
                if msg.offset() >= high - 1:
                    break
    finally:
        consumer.close()
    return records


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def alert_ids(client: TestClient) -> set[str]:
    page = client.get("/api/alerts", headers={"X-API-Key": ANALYST}).json()
    return {item["alert_id"] for item in page["items"]}


def pending(client: TestClient) -> int:
    stats = client.get("/api/queue/stats", headers={"X-API-Key": ANALYST}).json()
    return int(stats["outbox_pending"])


@pytest.fixture
def served(unique_topics: Settings, tmp_path: Path) -> Iterator[tuple[FastAPI, TestClient]]:
    app = create_app(review_settings(unique_topics, tmp_path))
    with TestClient(app) as client:
        yield app, client


def test_alert_in_verdict_out_and_control(served: tuple[FastAPI, TestClient]) -> None:
    app, client = served
    settings: Settings = app.state.settings
    alert = make_alert(1, card="card-77")
    produce(
        settings,
        settings.kafka.topic_alerts,
        [("card-77", alert.model_dump_json().encode()), ("card-77", b"not an alert")],
    )
    produce(
        settings,
        settings.kafka.topic_model_status,
        [
            ("logreg", make_status("logreg", deciding=True).model_dump_json().encode()),
            ("tree", make_status("tree", deciding=False).model_dump_json().encode()),
        ],
    )
    wait_for("the alert in the queue", lambda: alert.alert_id in alert_ids(client))
    wait_for(
        "two model statuses",
        lambda: len(client.get("/api/models", headers={"X-API-Key": ANALYST}).json()) == 2,
    )

    verdict = client.post(
        f"/api/alerts/{alert.alert_id}/verdict",
        json={"label": "fraud", "note": "confirmed with the card holder"},
        headers={"X-API-Key": ANALYST},
    )
    assert verdict.status_code == 200
    [(key, value)] = wait_for("the label", lambda: read_all(settings, settings.kafka.topic_labels))
    label = Label.model_validate_json(value)
    assert key == b"card-77"
    assert (label.transaction_id, label.card_id, label.label, label.source) == (
        "tx-1",
        "card-77",
        "fraud",
        "analyst",
    )

    accepted = client.put(
        "/api/models/deciding", json={"model_name": "tree"}, headers={"X-API-Key": ADMIN}
    )
    assert accepted.status_code == 202
    [(key, value)] = wait_for(
        "the control", lambda: read_all(settings, settings.kafka.topic_control)
    )
    control = Control.model_validate_json(value)
    assert key == b"model"
    assert (control.control_id, control.action, control.model_name, control.requested_by) == (
        accepted.json()["control_id"],
        "set_deciding_model",
        "tree",
        "ada",
    )
    wait_for("an empty outbox", lambda: pending(client) == 0)
    metrics = client.get("/metrics").text
    assert "fraudstream_api_outbox_delivered_total 2.0" in metrics
    assert 'fraudstream_api_alerts_ingested_total{outcome="invalid"} 1.0' in metrics


def decide(client: TestClient, alert_id: str, label: str) -> None:
    response = client.post(
        f"/api/alerts/{alert_id}/verdict", json={"label": label}, headers={"X-API-Key": ANALYST}
    )
    assert response.status_code == 200, response.text


def test_verdicts_during_an_outage_are_delivered_once_when_the_broker_is_back(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    kafka = Settings(
        kafka=KafkaSettings(bootstrap_servers=own_broker.bootstrap),
        local=LocalSettings(home=tmp_path),
    )
    create_topics(kafka)
    settings = review_settings(kafka, tmp_path)
    before, first, second = (make_alert(n, card=f"card-{n}") for n in range(3))
    produce(
        settings,
        settings.kafka.topic_alerts,
        [(a.transaction.card_id, a.model_dump_json().encode()) for a in (before, first, second)],
    )
    app = create_app(settings)
    with TestClient(app) as client:
        wait_for("the alerts", lambda: len(alert_ids(client)) == 3)
        # One label delivered first: the relay's producer is connected when the broker goes.
        decide(client, before.alert_id, "legit")
        wait_for("the first label", lambda: pending(client) == 0)

        assert own_broker.stop(timeout=30)
        decide(client, first.alert_id, "fraud")
        decide(client, second.alert_id, "legit")
        decide(client, first.alert_id, "fraud")  # the same verdict again: nothing more to send
        assert pending(client) == 2
        wait_for(
            "a failed delivery attempt",
            lambda: "fraudstream_api_outbox_failed_total 0.0" not in client.get("/metrics").text,
        )
        assert pending(client) == 2

        own_broker.start(wait=120)
        wait_for("the outbox to drain", lambda: pending(client) == 0, timeout=90)
        time.sleep(2 * settings.api.outbox_interval_seconds + 1)  # any duplicate would be out now
        labels = read_all(settings, settings.kafka.topic_labels)

    parsed = [(key, Label.model_validate_json(value)) for key, value in labels]
    assert sorted((key, label.transaction_id, label.label) for key, label in parsed) == [
        (b"card-0", "tx-0", "legit"),
        (b"card-1", "tx-1", "fraud"),
        (b"card-2", "tx-2", "legit"),
    ]


def test_the_api_starts_and_takes_verdicts_without_a_broker(tmp_path: Path) -> None:
    [port] = find_free_ports(1)
    settings = review_settings(
        Settings(kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")), tmp_path
    )
    app = create_app(settings)
    started = time.monotonic()
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        alert = make_alert(1)
        with app.state.sessions() as session:
            review.ingest_alert(review.Context(session), alert=alert)
        decide(client, alert.alert_id, "fraud")
        assert pending(client) == 1
    assert time.monotonic() - started < 30  # neither start nor stop waits for Kafka
