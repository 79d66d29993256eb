"""What every benchmark needs: a broker, fresh topics, pre-loaded input, decisions read back.

Every client is made from ``detector.kafka_config``: the producers are idempotent with
``acks=all`` and a record not delivered raises ``KafkaDeliveryError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from detector.contracts import Transaction
from detector.kafka_config import admin_config, consumer_config, producer_config
from detector.local.broker import LocalBroker
from detector.local.broker_config import find_free_ports
from detector.local.topics import create_topics
from detector.replay.datasets import read_dataset
from detector.replay.progress import ProgressBar
from detector.settings import KafkaSettings, Settings

log = structlog.get_logger("fraudstream.bench")

BOOTSTRAP_ENV = "FRAUDSTREAM_BOOTSTRAP_SERVERS"
TOPIC_FIELDS = tuple(
    name
    for name, field in KafkaSettings.model_fields.items()
    if name.startswith("topic_") and field.annotation is str
)
_POLL_SECONDS = 0.1


class BenchError(RuntimeError):
    """A benchmark could not run to its end (a system stalled, died or lost records)."""


@dataclass(frozen=True)
class InputRecord:
    """A transaction as it goes to Kafka, plus what the benchmarks join on."""

    key: bytes
    value: bytes
    transaction_id: str
    timestamp: float
    """Event time (epoch seconds)."""
    transaction: Transaction


def load_records(path: Path, count: int) -> list[InputRecord]:
    """The first ``count`` valid transactions of a dataset, serialized for Kafka."""
    records: list[InputRecord] = []
    reader = read_dataset(path, limit=count)
    with ProgressBar("reading dataset", total=count) as tick:
        for record in reader:
            tx = record.transaction
            records.append(
                InputRecord(
                    tx.card_id.encode(),
                    tx.model_dump_json().encode(),
                    tx.transaction_id,
                    tx.timestamp.timestamp(),
                    tx,
                )
            )
            tick()
    if len(records) < count:
        log.warning("dataset has fewer transactions than asked", asked=count, read=len(records))
    return records


@contextlib.contextmanager
def broker_for(settings: Settings, bootstrap: str | None, work: Path) -> Iterator[Settings]:
    """Settings for the broker to use: ``bootstrap``, else FRAUDSTREAM_BOOTSTRAP_SERVERS,
    else a fresh local broker in ``work`` (stopped on exit), started from the cached jars.
    """
    given = bootstrap or os.environ.get(BOOTSTRAP_ENV)
    if given:
        yield with_bootstrap(settings, given)
        return
    port, controller_port = find_free_ports(2)
    libs = settings.local.kafka_libs_dir or settings.local.home / "kafka" / "libs"
    broker = LocalBroker(
        work / "broker",
        port=port,
        controller_port=controller_port,
        version=settings.local.kafka_version,
        heap=settings.local.kafka_heap,
        libs_dir=libs,
    )
    broker.start(wait=120)
    try:
        yield with_bootstrap(settings, broker.bootstrap)
    finally:
        broker.stop()


def with_bootstrap(settings: Settings, bootstrap: str) -> Settings:
    """``settings`` pointed at another broker (a new object: ``brokers`` is cached)."""
    kafka = settings.kafka.model_dump(exclude={"bootstrap_servers"})
    return settings.model_copy(
        update={"kafka": KafkaSettings(**kafka, bootstrap_servers=bootstrap)}
    )


@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    """A temporary folder for broker data, recovery stores and logs, removed on exit."""
    path = Path(tempfile.mkdtemp(prefix="fraudstream-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Topics:
    """Fresh topic sets on one broker, all named ``bench-<run id>-...``; deletable at the end."""

    def __init__(self, settings: Settings, partitions: int) -> None:
        self.settings = settings
        self.partitions = partitions
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def input_topic(self) -> str:
        name = f"{self.prefix}-transactions"
        self._create([name])
        return name

    def system(self, name: str, transactions: str | None = None) -> Settings:
        """Settings whose topics are ``name``'s own (and ``transactions`` as input if given)."""
        update: dict[str, object] = {
            field: f"{self.prefix}-{name}-{field.removeprefix('topic_').replace('_', '-')}"
            for field in TOPIC_FIELDS
        }
        if transactions is not None:
            update["topic_transactions"] = transactions
        settings = self.settings.model_copy(
            update={"kafka": self.settings.kafka.model_copy(update=update)}
        )
        self._create([t for t in settings.kafka.topics if t != transactions])
        return settings

    def _create(self, names: Sequence[str]) -> None:
        create_topics(self.settings, names, partitions=self.partitions)
        self.created.extend(names)

    def delete(self) -> None:
        """Delete every topic made here (on a broker that outlives the benchmark)."""
        if not self.created:
            return
        admin = AdminClient(admin_config(self.settings))
        for topic, future in admin.delete_topics(self.created, operation_timeout=30).items():
            try:
                future.result(timeout=60)
            except Exception as error:  # best effort: report and go on
                log.warning("topic not deleted", topic=topic, error=str(error))
        self.created.clear()


def produce_all(
    settings: Settings, topic: str, records: Sequence[InputRecord], *, description: str
) -> None:
    """Publish ``records`` to ``topic`` as fast as the producer goes; every delivery checked."""
    producer = Producer(producer_config(settings))
    with ProgressBar(description, total=len(records)) as tick:
        for record in records:
            _produce(producer, topic, record.key, record.value)
            tick()
    flush(producer)


def produce_paced(
    settings: Settings, topic: str, records: Sequence[InputRecord], rate: float
) -> float:
    """Publish ``records`` at ``rate`` per second (on schedule, no catch-up bursts beyond
    it); every delivery checked. Returns the achieved rate.
    """
    producer = Producer(producer_config(settings))
    started = time.monotonic()
    with ProgressBar(f"offering {rate:,.0f} tx/s", total=len(records)) as tick:
        for i, record in enumerate(records):
            due = started + i / rate
            while (wait := due - time.monotonic()) > 0:
                producer.poll(min(wait, _POLL_SECONDS))
            _produce(producer, topic, record.key, record.value)
            tick()
    seconds = time.monotonic() - started
    flush(producer)
    return len(records) / max(seconds, 1e-9)


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            break
        except BufferError:  # local queue full: let it send (and report) first
            producer.poll(_POLL_SECONDS)
    producer.poll(0)


def flush(producer: Producer, timeout: float = 120.0) -> None:
    """Flush; a record not delivered raises (``producer_config``'s delivery report)."""
    left = producer.flush(timeout)
    if left:
        raise BenchError(f"{left} record(s) still undelivered after {timeout:g} s")


class Watermarks:
    """How many records a topic holds (sum of its partitions' high watermarks), cheaply."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer(
            consumer_config(
                settings,
                **{"group.id": f"bench-watch-{uuid.uuid4().hex}", "enable.auto.commit": False},
            )
        )
        metadata = self._consumer.list_topics(topic, timeout=30)
        self._partitions = [
            TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)
        ]
        self._highs = {tp.partition: 0 for tp in self._partitions}

    def highs(self) -> dict[int, int]:
        """High watermark per partition; a partition whose leader is settling (new
        topics) keeps its last known value.
        """
        for tp in self._partitions:
            try:
                low_high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            except KafkaException as error:
                log.debug("watermark not available yet", partition=tp.partition, error=str(error))
                continue
            if low_high is not None:
                self._highs[tp.partition] = low_high[1]
        return dict(self._highs)

    def total(self) -> int:
        return sum(self.highs().values())

    def close(self) -> None:
        self._consumer.close()


def wait_for_records(
    settings: Settings,
    topic: str,
    expected: int,
    *,
    alive: Callable[[], str | None],
    description: str,
    stall_seconds: float,
    start: int = 0,
) -> None:
    """Wait until ``topic`` holds ``expected`` records (counted from ``start``).

    ``alive()`` returns a reason when a process of the system died. Raises ``BenchError``
    if that happens, or if no record arrives for ``stall_seconds``.
    """
    marks = Watermarks(settings, topic)
    try:
        seen = 0
        last_progress = time.monotonic()
        with ProgressBar(description, total=expected) as tick:
            while seen < expected:
                dead = alive()
                if dead:
                    raise BenchError(f"{description}: {dead}")
                count = marks.total() - start
                for _ in range(max(0, min(count, expected) - seen)):
                    tick()
                if count > seen:
                    seen, last_progress = count, time.monotonic()
                elif time.monotonic() - last_progress > stall_seconds:
                    raise BenchError(
                        f"{description}: {max(seen, 0):,} of {expected:,} records after "
                        f"no progress for {stall_seconds:g} s"
                    )
                else:
                    time.sleep(0.5)
    finally:
        marks.close()


@dataclass(frozen=True)
class Read:
    """Records read back from a topic: the joined field and the Kafka timestamp (ms)."""

    ids: list[str]
    timestamps: list[int]

    def delays_after(self, sent: dict[str, int]) -> list[float]:
        """Each record's delay (ms) after the ``sent`` time of its id, sorted; records of
        other ids are left out."""
        return sorted(
            float(ts - sent[i])
            for i, ts in zip(self.ids, self.timestamps, strict=True)
            if i in sent
        )


def read_back(settings: Settings, topic: str, field: str = "transaction_id") -> Read:
    """Every record of ``topic`` up to its current end: ``field`` of its JSON value and its
    Kafka timestamp.
    """
    marks = Watermarks(settings, topic)
    try:
        ends = marks.highs()
    finally:
        marks.close()
    consumer = Consumer(
        consumer_config(
            settings, **{"group.id": f"bench-read-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
    )
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p, end in ends.items() if end > 0]
    )
    remaining = {p for p, end in ends.items() if end > 0}
    ids: list[str] = []
    stamps: list[int] = []
    deadline = time.monotonic() + 300
    try:
        while remaining:
            if time.monotonic() > deadline:
                raise BenchError(f"could not read {topic} back within 300 s")
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error():
                    raise BenchError(f"reading {topic}: {msg.error()}")
                partition, offset = msg.partition(), msg.offset()
                if offset is None or partition is None or offset >= ends[partition]:
                    continue
                ids.append(str(json.loads(msg.value() or b"{}").get(field)))
                stamps.append(msg.timestamp()[1])
                if offset + 1 >= ends[partition]:
                    remaining.discard(partition)
    finally:
        consumer.close()
    return Read(ids, stamps)


def free_addresses(count: int) -> str:
    """``FRAUDSTREAM_ADDRESSES`` for ``count`` local processes, on free ports."""
    return ";".join(f"127.0.0.1:{port}" for port in find_free_ports(count))
