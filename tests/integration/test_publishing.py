"""Publishing to a real Kafka broker: every record and chargeback arrives, pacing holds."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, Message
from confluent_kafka.admin import AdminClient, NewTopic

from detector.contracts import Label, Transaction
from detector.kafka_config import admin_config, consumer_config
from detector.replay.datasets import Record
from detector.replay.publishing import PublishError, publish, start_time_for_live
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import KafkaSettings, Settings

pytestmark = pytest.mark.integration

SMALL = SimulationConfig(n_customers=200, n_terminals=300, days=3, seed=11)


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    """The broker's settings with fresh single-partition topics for this test."""
    suffix = uuid.uuid4().hex[:12]
    topics = {"topic_transactions": f"tx-{suffix}", "topic_labels": f"labels-{suffix}"}
    admin = AdminClient(admin_config(kafka_settings))
    futures = admin.create_topics([NewTopic(name, 1, 1) for name in topics.values()])
    for future in futures.values():
        future.result(timeout=30)
    return kafka_settings.model_copy(
        update={"kafka": kafka_settings.kafka.model_copy(update=topics)}
    )


def _consume(settings: Settings, topic: str, expected: int) -> list[tuple[str, bytes]]:
    """Read ``expected`` records (key, value) from the start of ``topic``, or fail."""
    consumer = Consumer(
        consumer_config(
            settings,
            **{
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([topic])
    received: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while len(received) < expected and time.monotonic() < deadline:
            received.extend(_key_value(m) for m in consumer.consume(1000, timeout=0.5))
        # A short extra poll would reveal duplicates or strays beyond the expected count.
        received.extend(_key_value(m) for m in consumer.consume(1000, timeout=0.5))
    finally:
        consumer.close()
    return received


def _key_value(message: Message) -> tuple[str, bytes]:
    assert message.error() is None, message.error()
    key, value = message.key(), message.value()
    assert key is not None and value is not None
    return key.decode(), value


def _spaced(n: int, gap: timedelta, start: datetime | None = None) -> list[Record]:
    first = start or datetime(2024, 1, 1, tzinfo=UTC)
    return [
        Record(
            Transaction(
                transaction_id=f"spaced-{i}",
                timestamp=first + i * gap,
                card_id=f"card-{i % 3}",
                terminal_id="term-1",
                amount=10.0 + i,
            ),
            is_fraud=False,
            scenario=0,
        )
        for i in range(n)
    ]


def test_every_transaction_and_chargeback_arrives(settings: Settings) -> None:
    records = list(simulate(SMALL))
    frauds = [r for r in records if r.is_fraud]
    assert frauds, "the test needs some fraud to check chargebacks"
    delay = timedelta(days=1)

    stats = publish(records, settings, chargeback_delay=delay)

    assert (stats.transactions, stats.labels, stats.errors) == (len(records), len(frauds), 0)
    assert not stats.interrupted
    sent = _consume(settings, settings.kafka.topic_transactions, len(records))
    # One partition: the topic holds the records in publication (timestamp) order.
    assert [Transaction.model_validate_json(value) for _, value in sent] == [
        r.transaction for r in records
    ]
    assert [key for key, _ in sent] == [r.transaction.card_id for r in records]
    labels = _consume(settings, settings.kafka.topic_labels, len(frauds))
    expected = {
        r.transaction.transaction_id: Label(
            transaction_id=r.transaction.transaction_id,
            card_id=r.transaction.card_id,
            label="fraud",
            source="chargeback",
            labeled_at=r.transaction.timestamp + delay,
        )
        for r in frauds
    }
    received = {}
    for key, value in labels:
        label = Label.model_validate_json(value)
        assert key == label.card_id
        received[label.transaction_id] = label
    assert len(labels) == len(frauds)
    assert received == expected


def test_chargebacks_are_sent_when_due_and_never_dated_ahead_of_real_time(
    settings: Settings,
) -> None:
    # Four transactions an hour apart ending half an hour ago, the first two fraudulent,
    # chargebacks 3 hours later: the first is due (before the fourth transaction), the
    # second would be dated in the future, so realtime_cap keeps it back at the end.
    start = datetime.now(UTC) - timedelta(hours=3.5)
    records = [
        Record(r.transaction, is_fraud=i < 2, scenario=2 if i < 2 else 0)
        for i, r in enumerate(_spaced(4, timedelta(hours=1), start=start))
    ]
    stats = publish(records, settings, chargeback_delay=timedelta(hours=3), realtime_cap=True)
    assert (stats.transactions, stats.labels) == (4, 1)
    labels = [
        Label.model_validate_json(v) for _, v in _consume(settings, settings.kafka.topic_labels, 1)
    ]
    assert [(label.transaction_id, label.labeled_at) for label in labels] == [
        ("spaced-0", start + timedelta(hours=3))
    ]


def test_rate_caps_throughput(settings: Settings) -> None:
    records = _spaced(60, timedelta(seconds=1))
    stats = publish(records, settings, rate=200)
    assert stats.transactions == 60
    assert stats.seconds >= 59 / 200 * 0.9


def test_speedup_paces_by_event_time(settings: Settings) -> None:
    records = _spaced(5, timedelta(seconds=10))  # 40 s of event time
    stats = publish(records, settings, speedup=50)  # about 0.8 s
    assert stats.transactions == 5
    assert 0.75 <= stats.seconds < 5


def test_realtime_cap_never_publishes_ahead_of_the_wall_clock(settings: Settings) -> None:
    now = datetime.now(UTC)
    past = _spaced(50, timedelta(seconds=1), start=now - timedelta(days=1))
    future = _spaced(1, timedelta(seconds=1), start=now + timedelta(seconds=1))
    started = time.monotonic()
    stats = publish([*past, *future], settings, realtime_cap=True)
    assert stats.transactions == 51
    assert time.monotonic() - started >= 0.9  # the past went at once, the future waited
    assert datetime.now(UTC) >= future[0].transaction.timestamp


def test_stop_ends_publishing_early_and_flushes(settings: Settings) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    endless: Iterator[Record] = simulate(SimulationConfig(n_customers=200, n_terminals=300))
    try:
        stats = publish(endless, settings, rate=100, stop=stop, progress=True)
    finally:
        timer.cancel()
    assert stats.interrupted
    assert 10 < stats.transactions < 200
    assert len(_consume(settings, settings.kafka.topic_transactions, stats.transactions)) == (
        stats.transactions
    )


def test_undeliverable_records_raise_with_the_count() -> None:
    unreachable = Settings(
        kafka=KafkaSettings(
            bootstrap_servers="127.0.0.1:9",
            kafka_extra_config={"message.timeout.ms": "1000", "log_level": "0"},
        )
    )
    expected = r"3 record\(s\) could not be delivered to Kafka \(0 were\)"
    with pytest.raises(PublishError, match=expected) as caught:
        publish(_spaced(3, timedelta(seconds=1)), unreachable)
    assert caught.value.stats.errors == 3


@pytest.mark.parametrize(
    "extra", [{"acks": "1"}, {"request.required.acks": "0"}, {"enable.idempotence": "false"}]
)
def test_an_extra_config_that_weakens_durability_is_refused(extra: dict[str, str]) -> None:
    weak = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9", kafka_extra_config=extra))
    with pytest.raises(ValueError, match="FRAUDSTREAM_KAFKA_EXTRA_CONFIG"):
        publish(_spaced(1, timedelta(seconds=1)), weak)


def test_start_time_for_live_is_utc_midnight_days_back() -> None:
    start = start_time_for_live(7)
    assert start.tzinfo is not None and start.utcoffset() == timedelta(0)
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    assert timedelta(days=7) <= datetime.now(UTC) - start < timedelta(days=8)
