"""A Kafka client for the tests, independent of the detector's dataflow.

It is configured like the detector's clients (``detector.kafka_config``): idempotent
``acks=all`` producers whose every delivery is checked, and ``kafka_extra_config`` (such
as SASL credentials) on every client.
"""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from detector.kafka_config import consumer_config, producer_config
from detector.settings import Settings


def produce(settings: Settings, topic: str, records: list[tuple[str | None, bytes]]) -> None:
    """Send ``records`` (key, value) the way the detector's producers do; fail unless every
    one was delivered."""
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(f"{message.topic()} [{message.partition()}]: {error.str()}")

    producer = Producer(producer_config(settings))
    for key, value in records:
        producer.produce(
            topic, value=value, key=key.encode() if key else None, on_delivery=delivered
        )
    left = producer.flush(30)
    assert left == 0, f"{left} of {len(records)} record(s) still queued after 30 s"
    assert not failures, f"{len(failures)} record(s) not delivered: {failures[:3]}"


def consume_all(settings: Settings, topic: str) -> list[bytes]:
    """Everything on ``topic`` now, read partition by partition to the end offsets."""
    consumer = Consumer(
        consumer_config(
            settings, **{"group.id": f"test-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
    )
    metadata = consumer.list_topics(topic, timeout=10)
    values: list[bytes] = []
    for partition in metadata.topics[topic].partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high <= low:
            continue
        consumer.assign([TopicPartition(topic, partition, low)])
        while True:
            msg = consumer.poll(5)
            assert msg is not None, f"{topic}[{partition}] ended before offset {high}"
            assert msg.error() is None, msg.error()
            value, offset = msg.value(), msg.offset()
            assert value is not None and offset is not None
            values.append(value)
            if offset >= high - 1:
                break
    consumer.close()
    return values
