"""What the detector already published: the decisions of record after a crash.

A restarted detector resumes from its last snapshot and decides again the transactions
read since then. Its models may not score them as they did the first time (partitions
interleave differently, and the first run learned from them), so before it decides
anything it reads back the decisions it published since that snapshot: a transaction
decided again gets the very decision it had, byte for byte.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from detector.contracts import Decision

log = structlog.get_logger(__name__)

# (card id, transaction id) -> the published Decision's JSON
Published = dict[tuple[str, str], bytes]


class ReadBackError(RuntimeError):
    """The decisions published since the last snapshot could not be read."""


def read_published(
    config: Mapping[str, Any], topic: str, since: float, timeout: float = 60.0
) -> Published:
    """Decisions on ``topic`` written at or after ``since`` (epoch seconds).

    Reads every partition from the first record of ``since`` to the end it had when the
    call began. ``config`` is a librdkafka consumer configuration (no group is joined and
    nothing is committed).
    """
    consumer = Consumer(
        {
            **config,
            "group.id": "fraudstream-read-back",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    started = time.monotonic()
    try:
        return _read(consumer, topic, since, started + timeout)
    except KafkaException as error:
        raise ReadBackError(f"cannot read back {topic!r}: {error}") from None
    finally:
        consumer.close()
        log.info("decisions read back", topic=topic, seconds=round(time.monotonic() - started, 2))


def _read(consumer: Consumer, topic: str, since: float, deadline: float) -> Published:
    metadata = consumer.list_topics(topic, timeout=max(deadline - time.monotonic(), 1.0))
    partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
    if not partitions:
        raise ReadBackError(f"topic {topic!r} does not exist")
    wanted = [TopicPartition(topic, p, int(since * 1000)) for p in sorted(partitions)]
    starts = consumer.offsets_for_times(wanted, timeout=max(deadline - time.monotonic(), 1.0))
    ends: dict[int, int] = {}
    todo: list[TopicPartition] = []
    for start in starts:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(topic, start.partition), timeout=max(deadline - time.monotonic(), 1.0)
        )
        if start.offset == OFFSET_END or start.offset < 0 or start.offset >= high:
            continue  # nothing written since
        ends[start.partition] = high
        todo.append(start)
    published: Published = {}
    if not todo:
        return published
    consumer.assign(todo)
    while ends:
        if time.monotonic() > deadline:
            raise ReadBackError(
                f"reading back {topic!r} took too long; partitions left: {sorted(ends)}"
            )
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            if msg.error():
                raise ReadBackError(f"cannot read back {topic!r}: {msg.error()}")
            partition, offset = msg.partition(), msg.offset()
            value = msg.value()
            if value:
                try:
                    decision = Decision.model_validate_json(value)
                except ValueError:
                    pass  # not ours to judge: the topic holds decisions only
                else:
                    published[(decision.card_id, decision.transaction_id)] = value
            if partition in ends and offset is not None and offset + 1 >= ends[partition]:
                del ends[partition]
    return published
