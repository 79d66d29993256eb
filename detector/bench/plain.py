"""The plain loop: what a team would write without a stream processor, the benchmark's peer.

One process: a confluent-kafka consumer (a consumer group, offsets committed after each
batch's decisions are acknowledged) -> the record validated as the detector does ->
``ScoringCore.process`` -> each ``Decision`` as JSON, keyed by card, to the decisions
topic with the production producer (idempotent, ``acks=all``, every delivery checked).
No alerts, no model status, no recovery snapshots: the state lives in memory only.

Run by ``fraudstream bench`` as ``python -m detector.bench.plain --group-id ID`` with the
FRAUDSTREAM_* environment; SIGINT or SIGTERM stops it after the current batch.
"""

from __future__ import annotations

import argparse
import signal
import threading
from datetime import timedelta

import structlog
from confluent_kafka import Consumer, Producer

from detector.contracts import Transaction
from detector.core import ScoringCore
from detector.items import Scored
from detector.kafka_config import consumer_config, producer_config
from detector.local.logs import configure_logging
from detector.settings import Settings
from detector.validation import parse_event

log = structlog.get_logger("fraudstream.bench.plain")

FLUSH_TIMEOUT_SECONDS = 60.0


def run_plain_loop(settings: Settings, group_id: str, stop: threading.Event) -> int:
    """Consume, score and publish until ``stop`` is set; returns the decisions published."""
    consumer = Consumer(
        consumer_config(
            settings,
            **{
                "group.id": group_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    producer = Producer(producer_config(settings))
    core = ScoringCore(settings.scoring.placed(shards=settings.detector.shards))
    skew = timedelta(seconds=settings.detector.max_clock_skew_seconds)
    topic = settings.kafka.topic_decisions
    decided = rejected = 0
    consumer.subscribe([settings.kafka.topic_transactions])
    try:
        while not stop.is_set():
            batch = consumer.consume(settings.kafka.kafka_batch_size, timeout=0.5)
            if not batch:
                continue
            for msg in batch:
                if msg.error():
                    log.warning("kafka error", error=str(msg.error()))
                    continue
                event = parse_event(
                    msg.value(),
                    Transaction,
                    max_bytes=settings.detector.max_message_bytes,
                    max_clock_skew=skew,
                )
                if isinstance(event, tuple):
                    rejected += 1
                    continue
                for out in core.process(event):
                    if isinstance(out, Scored):
                        value = out.to_decision().model_dump_json().encode()
                        _produce(producer, topic, out.transaction.card_id.encode(), value)
                        decided += 1
            # At least once: offsets move only past decisions the broker acknowledged.
            left = producer.flush(FLUSH_TIMEOUT_SECONDS)
            if left:
                raise RuntimeError(f"{left} decision(s) not delivered")
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
        producer.flush(FLUSH_TIMEOUT_SECONDS)
    log.info("plain loop stopped", decided=decided, rejected=rejected)
    return decided


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--group-id", required=True)
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.logs.log_level, settings.logs.log_format)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    run_plain_loop(settings, args.group_id, stop)


if __name__ == "__main__":
    main()
