"""Publishing records to Kafka: replays, the live simulator, and their chargebacks.

Transactions go to ``settings.kafka.topic_transactions`` keyed by ``card_id``. Optionally, a
fraudulent transaction's chargeback (a ``Label`` from source ``chargeback``) goes to
``settings.kafka.topic_labels`` once the stream's event time passes the transaction time plus
a delay, the way a real chargeback arrives weeks after the payment.

Kafka message timestamps are left to the producer (wall clock): a replay of 2018 data
stamped with 2018 times would be deleted at once by time-based retention.

The producer is ``kafka_config.producer_config``'s: idempotent, ``acks=all``. Every
delivery report is counted, and ``publish`` raises ``PublishError`` if any record was not
delivered.
"""

from __future__ import annotations

import contextlib
import heapq
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from confluent_kafka import KafkaError, Message, Producer

from detector.contracts import Label
from detector.kafka_config import producer_config
from detector.replay.datasets import Record
from detector.replay.progress import ProgressBar
from detector.settings import Settings

# Longest single sleep, so that a stop request or Ctrl-C is honoured promptly and the
# producer keeps serving delivery reports while publishing is paced.
_MAX_NAP_SECONDS = 0.1
_MAX_ERRORS_KEPT = 10


@dataclass
class PublishStats:
    """What a ``publish`` call did."""

    transactions: int = 0
    """Transactions delivered (acknowledged by the broker)."""
    labels: int = 0
    """Chargeback labels delivered."""
    errors: int = 0
    """Records that could not be delivered (delivery errors and records left after flush)."""
    seconds: float = 0.0
    interrupted: bool = False
    """True if ``stop`` was set or Ctrl-C was pressed before the records ran out."""
    error_messages: list[str] = field(default_factory=list)
    """The first few delivery errors."""


class PublishError(RuntimeError):
    """Some records were not delivered; ``stats`` says how many and what was sent."""

    def __init__(self, stats: PublishStats) -> None:
        detail = "; ".join(stats.error_messages[:3]) or "not delivered before the flush timeout"
        super().__init__(
            f"{stats.errors} record(s) could not be delivered to Kafka "
            f"({stats.transactions + stats.labels} were): {detail}"
        )
        self.stats = stats


def publish(
    records: Iterable[Record],
    settings: Settings,
    *,
    rate: float | None = None,
    speedup: float | None = None,
    realtime_cap: bool = False,
    chargeback_delay: timedelta | None = None,
    limit: int | None = None,
    progress: bool = False,
    total: int | None = None,
    stop: threading.Event | None = None,
    flush_timeout: float = 60.0,
) -> PublishStats:
    """Publish transactions (and optionally their chargebacks) to Kafka.

    Parameters
    ----------
    records
        Transactions in timestamp order, with ground truth for chargebacks.
    settings
        Brokers, topic names and extra librdkafka properties.
    rate
        At most this many transactions per second; None for no limit.
    speedup
        Pace by event time: a gap between two timestamps is waited divided by this.
    realtime_cap
        Never publish a transaction dated later than the wall clock; wait until it is due.
    chargeback_delay
        If set, publish a ``fraud`` label from ``chargeback`` for each fraudulent record,
        dated and sent when the event time reaches the transaction time plus this delay.
        Chargebacks still pending when the records (or ``limit``) run out are sent then
        (except, under ``realtime_cap``, those dated in the future); none after a stop.
    limit
        Publish at most this many transactions.
    progress
        Show a progress bar; ``total`` is its length when known.
    stop
        Set it to end publishing early (the producer is still flushed).
    flush_timeout
        Seconds to wait at the end for outstanding deliveries.

    Returns
    -------
    PublishStats
        Counts and duration. A Ctrl-C ends publishing like ``stop`` does and is reported
        as ``interrupted``.

    Raises
    ------
    PublishError
        If any record could not be delivered.
    """
    for name, value in (("rate", rate), ("speedup", speedup)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    publisher = _Publisher(settings, stop)
    pacer = _Pacer(rate, speedup, realtime_cap)
    chargebacks = _Chargebacks(chargeback_delay)
    if limit is not None:
        total = limit if total is None else min(total, limit)
    started = time.monotonic()
    try:
        with ProgressBar("publishing", enabled=progress, total=total) as tick:
            finished = _run(records, publisher, pacer, chargebacks, limit, tick)
        if finished:
            cutoff = datetime.now(UTC) if realtime_cap else None
            publisher.send_labels(chargebacks.drain(cutoff))
        else:
            publisher.stats.interrupted = True
    except KeyboardInterrupt:
        publisher.stats.interrupted = True
    finally:
        publisher.flush(flush_timeout)
        publisher.stats.seconds = time.monotonic() - started
    if publisher.stats.errors:
        raise PublishError(publisher.stats)
    return publisher.stats


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that Ctrl-C (SIGINT) or SIGTERM sets, for ``publish(stop=...)``.

    Without it a Ctrl-C raises ``KeyboardInterrupt`` wherever Python happens to be, also
    inside a delivery report called from librdkafka, which then fails as a SystemError.
    """
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda _signum, _frame: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def start_time_for_live(days_back: float) -> datetime:
    """UTC midnight ``days_back`` days ago: a live simulation's history then ends now."""
    moment = datetime.now(UTC) - timedelta(days=days_back)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _run(
    records: Iterable[Record],
    publisher: _Publisher,
    pacer: _Pacer,
    chargebacks: _Chargebacks,
    limit: int | None,
    tick: Callable[[], None],
) -> bool:
    """Publish until the records (or the limit) run out: True, or a stop: False."""
    if limit is not None and limit <= 0:
        return True
    for record in records:
        transaction = record.transaction
        if not publisher.wait(pacer.delay(transaction.timestamp)):
            return False
        publisher.send_labels(chargebacks.due(transaction.timestamp))
        publisher.send_transaction(record)
        if record.is_fraud:
            chargebacks.add(record)
        tick()
        if limit is not None and publisher.transactions_sent >= limit:
            return True
        if publisher.stopped:
            return False
    return True


class _Publisher:
    """A producer with delivery accounting and stop-aware waiting."""

    def __init__(self, settings: Settings, stop: threading.Event | None) -> None:
        # Each record's delivery report is ours (``_delivered``): it counts failures.
        self._producer = Producer(producer_config(settings))
        self._transactions_topic = settings.kafka.topic_transactions
        self._labels_topic = settings.kafka.topic_labels
        self._stop = stop
        self.stats = PublishStats()
        self.transactions_sent = 0  # handed to the producer; stats count deliveries

    @property
    def stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep while serving delivery reports; False if asked to stop meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stopped:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self._producer.poll(min(remaining, _MAX_NAP_SECONDS))
        return False

    def send_transaction(self, record: Record) -> None:
        transaction = record.transaction
        self._produce(self._transactions_topic, transaction.card_id, transaction.model_dump_json())
        self.transactions_sent += 1

    def send_labels(self, labels: Iterable[Label]) -> None:
        for label in labels:
            self._produce(self._labels_topic, label.card_id, label.model_dump_json())

    def flush(self, timeout: float) -> None:
        # Records still queued after the timeout were not delivered: count them too.
        left = self._producer.flush(timeout)
        if left:
            self.stats.errors += left
            self._note_error(f"{left} record(s) still queued after {timeout:g}s")

    def _produce(self, topic: str, key: str, value: str) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, key=key.encode(), value=value.encode(), on_delivery=self._delivered
                )
                break
            except BufferError:
                # The local queue is full: let the producer send and report, then retry.
                self._producer.poll(_MAX_NAP_SECONDS)
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.stats.errors += 1
            self._note_error(f"{message.topic()}: {error.str()}")
            return
        if message.topic() == self._transactions_topic:
            self.stats.transactions += 1
        else:
            self.stats.labels += 1

    def _note_error(self, text: str) -> None:
        if len(self.stats.error_messages) < _MAX_ERRORS_KEPT:
            self.stats.error_messages.append(text)


class _Pacer:
    """How long to wait before the next transaction, for the requested pacings."""

    def __init__(self, rate: float | None, speedup: float | None, realtime_cap: bool) -> None:
        self._interval = 1 / rate if rate else None
        self._speedup = speedup
        self._realtime_cap = realtime_cap
        self._next_slot: float | None = None  # monotonic time the rate allows next
        self._origin: tuple[float, float] | None = None  # (monotonic, event time) at start

    def delay(self, timestamp: datetime) -> float:
        now = time.monotonic()
        waits = [0.0]
        if self._interval is not None:
            # Slots are spaced from the previous slot, not from "now", so short stalls
            # are caught up and the long-run rate is exact.
            slot = now if self._next_slot is None else max(self._next_slot, now - 1.0)
            waits.append(slot - now)
            self._next_slot = slot + self._interval
        if self._speedup is not None:
            event = timestamp.timestamp()
            if self._origin is None:
                self._origin = (now, event)
            start_wall, start_event = self._origin
            waits.append(start_wall + (event - start_event) / self._speedup - now)
        if self._realtime_cap:
            waits.append((timestamp - datetime.now(UTC)).total_seconds())
        return max(waits)


class _Chargebacks:
    """Fraud labels waiting for the event time to reach their date."""

    def __init__(self, delay: timedelta | None) -> None:
        self._delay = delay
        self._pending: list[tuple[datetime, int, Label]] = []
        self._sequence = 0  # ties on the date keep publication order

    def add(self, record: Record) -> None:
        if self._delay is None:
            return
        transaction = record.transaction
        label = Label(
            transaction_id=transaction.transaction_id,
            card_id=transaction.card_id,
            label="fraud",
            source="chargeback",
            labeled_at=transaction.timestamp + self._delay,
            origin="chargeback",
        )
        heapq.heappush(self._pending, (label.labeled_at, self._sequence, label))
        self._sequence += 1

    def due(self, now: datetime) -> list[Label]:
        """Remove and return the labels dated at or before ``now``, oldest first."""
        labels = []
        while self._pending and self._pending[0][0] <= now:
            labels.append(heapq.heappop(self._pending)[2])
        return labels

    def drain(self, cutoff: datetime | None) -> list[Label]:
        """The remaining labels, or those dated at or before ``cutoff`` if given."""
        if cutoff is not None:
            return self.due(cutoff)
        return [heapq.heappop(self._pending)[2] for _ in range(len(self._pending))]
