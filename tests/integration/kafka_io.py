"""A plain Kafka client for the tests, independent of the detector's own I/O."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from detector.settings import Settings


def produce(settings: Settings, topic: str, records: list[tuple[str | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for key, value in records:
        producer.produce(topic, value=value, key=key.encode() if key else None)
    assert producer.flush(30) == 0


def consume_all(settings: Settings, topic: str) -> list[bytes]:
    """Everything on ``topic`` now, read partition by partition to the end offsets."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
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
            values.append(msg.value())
            if msg.offset() >= high - 1:
                break
    consumer.close()
    return values
