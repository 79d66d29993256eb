"""``fraudstream tail``: a topic's records as JSON lines, for a person watching the system."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from detector.kafka_config import consumer_config
from detector.settings import Settings

log = structlog.get_logger("fraudstream.tail")

POLL_SECONDS = 0.5
METADATA_TIMEOUT_SECONDS = 5.0


def json_line(value: bytes | None) -> str:
    """A record's value as one JSON line: itself if it is JSON, else a JSON string."""
    text = (value or b"").decode(errors="replace")
    try:
        return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return json.dumps(text, ensure_ascii=False)


def tail_topic(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    idle_seconds: float | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Print ``topic``'s records until Ctrl-C, ``limit`` records or ``idle_seconds``.

    Every partition is assigned directly (no group joins, no offsets committed). Returns
    the number of records printed; ``LookupError`` if the topic does not exist.
    """
    consumer = Consumer(
        consumer_config(
            settings,
            **{
                "group.id": f"fraudstream-tail-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            },
        )
    )
    stop = threading.Event()
    previous = {
        s: signal.signal(s, lambda _signum, _frame: stop.set())
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    printed = 0
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise LookupError(
                f"topic {topic!r} does not exist at {settings.kafka.bootstrap_servers}"
            )
        partitions = sorted(found.partitions)
        if from_beginning:
            starts = [OFFSET_BEGINNING] * len(partitions)
        else:  # the end as of now: a record produced after the line below is printed
            starts = [
                consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=METADATA_TIMEOUT_SECONDS
                )[1]
                for p in partitions
            ]
        consumer.assign(
            [TopicPartition(topic, p, o) for p, o in zip(partitions, starts, strict=True)]
        )
        log.info("reading", topic=topic, partitions=len(partitions), from_beginning=from_beginning)
        last = time.monotonic()
        while not stop.is_set() and (limit is None or printed < limit):
            message = consumer.poll(POLL_SECONDS)
            if message is None or message.error() is not None:
                if idle_seconds is not None and time.monotonic() - last >= idle_seconds:
                    break
                continue
            out(json_line(message.value()))
            printed += 1
            last = time.monotonic()
    finally:
        consumer.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return printed
