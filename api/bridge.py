"""The review service's Kafka side: alerts, decisions and model status in, labels and
controls out.

Two asyncio tasks live in the app's lifespan:

- the *consumer* reads ``alerts``, ``decisions``, ``model-status`` and
  ``detector-events`` into the database through ``review.ingest_*`` (idempotent: a
  record read twice changes nothing) and commits its offsets only after the database
  write, so a crash re-reads rather than loses. Decisions come at the stream's rate: a
  batch of them is one transaction, and those stored more than ``decisions_keep_days``
  ago are purged every hour, as are detector events past ``detector_events_keep_days``;
- the *relay* sends the outbox (labels written with each verdict, control messages
  written with each admin change) in ``id`` order through an idempotent producer
  (``acks=all``) and marks a row sent only once the send future of its record resolved
  without error, i.e. all in-sync replicas have it. It runs every
  ``outbox_interval_seconds`` and at once when a verdict or control is written
  (``notify``).

Both clients take ``FRAUDSTREAM_KAFKA_EXTRA_CONFIG`` (security, timeouts) through
``api.kafka_options``; the settings the guarantees above rest on are fixed here.

Neither task may stop the API: a broker that is down at start or goes away later is
logged and retried with a backoff while the HTTP side keeps accepting verdicts, which
wait in the outbox until Kafka is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError, StatementError
from sqlalchemy.orm import Session

from api import live, review
from api.kafka_options import aiokafka_options, idempotent_producer_options, started_producer
from api.metrics import ApiMetrics
from detector.contracts import Alert, Decision, DetectorEvent, ModelStatus
from detector.settings import Settings
from detector.validation import describe_errors

log = structlog.get_logger("fraudstream.api")

CONSUMER_GROUP = "fraudstream-api"
CLIENT_ID = "fraudstream-api"
RELAY_BATCH = 500
MAX_BACKOFF_SECONDS = 10.0
# Bounded waits, so a broker outage turns into a logged retry within seconds.
REQUEST_TIMEOUT_MS = 10_000
# How long the relay waits for the broker to acknowledge a record before it gives up,
# drops the producer and tries again later.
DELIVERY_TIMEOUT_SECONDS = 15.0
# How often decisions past ``decisions_keep_days`` are purged.
PURGE_EVERY_SECONDS = 3600.0


def _now() -> datetime:
    return datetime.now(UTC)


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


def _invalid_text(error: Exception) -> str:
    """A short reason for a skipped record (without the record, which may be huge)."""
    if isinstance(error, ValidationError):
        return describe_errors(error.errors(include_url=False), limit=1)[:300] or "invalid"
    if isinstance(error, StatementError):
        return f"{type(error.orig or error).__name__}: {error.orig or error}"[:300]
    return _error_text(error)[:300]


@dataclass
class ConsumedCounts:
    """What one batch of consumed records did to the database."""

    alerts_new: int = 0
    alerts_duplicate: int = 0
    decisions_new: int = 0
    decisions_duplicate: int = 0
    statuses: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    detector_events: int = 0  # stored or replaced
    detector_events_unchanged: int = 0


def store_records(
    session_maker: Callable[[], Session],
    settings: Settings,
    records: Iterable[tuple[str, bytes | None]],
    now: datetime,
) -> ConsumedCounts:
    """Parse and ingest ``(topic, value)`` records; invalid ones are logged and skipped.

    Each alert and status has its own transaction (``review.ingest_*`` commit): one bad
    record never undoes the others. The batch's decisions, checked first, are stored
    together in one transaction.
    """
    counts = ConsumedCounts()
    decisions: list[Decision] = []
    for topic, value in records:
        try:
            if topic == settings.kafka.topic_decisions:
                decision = Decision.model_validate_json(value or b"")
                review.check_decision(decision)
                decisions.append(decision)
            elif topic == settings.kafka.topic_alerts:
                alert = Alert.model_validate_json(value or b"")
                with session_maker() as session:
                    new = review.ingest_alert(review.Context(session).at(now), alert=alert)
                if new:
                    live.alert_received(alert)
                    counts.alerts_new += 1
                else:
                    counts.alerts_duplicate += 1
            elif topic == settings.kafka.topic_model_status:
                status = ModelStatus.model_validate_json(value or b"")
                with session_maker() as session:
                    review.ingest_status(review.Context(session).at(now), status=status)
                live.status_received(status)
                counts.statuses += 1
            elif topic == settings.kafka.topic_detector_events:
                event = DetectorEvent.model_validate_json(value or b"")
                with session_maker() as session:
                    context = review.Context(session).at(now)
                    news = review.ingest_detector_event(context, event=event)
                if news:
                    live.detector_event_received(event)
                    counts.detector_events += 1
                else:
                    counts.detector_events_unchanged += 1
        except (OperationalError, InterfaceError):
            raise  # the database is unreachable: the batch is read again later
        except (ValidationError, review.ReviewError, StatementError) as error:
            # Not a valid record, or one the database cannot hold (too long, NUL bytes):
            # skipping it is the only way forward, so say so loudly.
            counts.invalid[topic] = counts.invalid.get(topic, 0) + 1
            log.warning("invalid record skipped", topic=topic, error=_invalid_text(error))
    if decisions:
        _store_decisions(session_maker, settings.kafka.topic_decisions, decisions, now, counts)
    return counts


def _store_decisions(
    session_maker: Callable[[], Session],
    topic: str,
    decisions: list[Decision],
    now: datetime,
    counts: ConsumedCounts,
) -> None:
    """Store checked decisions in one transaction; should the database still refuse the
    batch, store them one by one to find and skip the records it cannot hold."""
    try:
        with session_maker() as session:
            added = review.ingest_decisions(review.Context(session).at(now), decisions=decisions)
    except (OperationalError, InterfaceError):
        raise
    except StatementError:
        added = 0
        for decision in decisions:
            try:
                with session_maker() as session:
                    context = review.Context(session).at(now)
                    added += review.ingest_decisions(context, decisions=[decision])
            except (OperationalError, InterfaceError):
                raise
            except StatementError as error:
                counts.invalid[topic] = counts.invalid.get(topic, 0) + 1
                log.warning("invalid record skipped", topic=topic, error=_invalid_text(error))
                decisions = [d for d in decisions if d is not decision]
    counts.decisions_new += added
    counts.decisions_duplicate += len(decisions) - added


def purge_decisions(session_maker: Callable[[], Session], settings: Settings, now: datetime) -> int:
    """Drop the decisions stored more than ``decisions_keep_days`` before ``now``."""
    before = now - timedelta(days=settings.api.decisions_keep_days)
    with session_maker() as session:
        return review.purge_decisions(review.Context(session).at(now), before=before)


def purge_detector_events(
    session_maker: Callable[[], Session], settings: Settings, now: datetime
) -> int:
    """Drop the detector events stored more than ``detector_events_keep_days`` before ``now``."""
    before = now - timedelta(days=settings.api.detector_events_keep_days)
    with session_maker() as session:
        return review.purge_detector_events(review.Context(session).at(now), before=before)


def delivery_problem(future: asyncio.Future[Any], timeout: float) -> str | None:
    """Why the record behind a send ``future`` does not count as delivered; None if it does.

    Only a future that resolved with a result is a delivery: one still pending, cancelled
    (its producer was dropped) or failed is not.
    """
    if not future.done():
        return f"not acknowledged within {timeout:g} s"
    if future.cancelled():
        return "the send was cancelled before the broker acknowledged it"
    exception = future.exception()
    return None if exception is None else _error_text(exception)


@dataclass(frozen=True)
class RelayResult:
    """One relay pass: rows found pending, delivered, and failed (kept for a retry)."""

    pending: int
    sent: int
    failed: int


class Bridge:
    """The consumer and the relay of one app; ``start`` and ``stop`` in its lifespan."""

    def __init__(
        self,
        settings: Settings,
        session_maker: Callable[[], Session],
        metrics: ApiMetrics,
        *,
        group_id: str = CONSUMER_GROUP,
    ) -> None:
        self.settings = settings
        self.sessions = session_maker
        self.metrics = metrics
        self.group_id = group_id
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._producer: AIOKafkaProducer | None = None
        self._next_purge = time.monotonic()

    # --- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Start both tasks and return at once: nothing here waits for the broker."""
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._consume_forever(), name="fraudstream-api-consumer"),
            asyncio.create_task(self._relay_forever(), name="fraudstream-api-relay"),
        ]

    async def stop(self) -> None:
        """Cancel the tasks; a last relay pass delivers what it can within a few seconds."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.relay_once(delivery_timeout=3), timeout=5)
        await self._close_producer()

    def notify(self) -> None:
        """Wake the relay now (safe from any thread: route handlers run in a pool)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake.set)

    # --- consumer ------------------------------------------------------------------

    def consumer_options(self) -> dict[str, Any]:
        """The consumer's keyword arguments: defaults, the extra config, then what is fixed.

        Built for each new consumer, so renewed TLS files are read on reconnect.
        """
        return {
            "client_id": CLIENT_ID,
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
            **aiokafka_options(self.settings.kafka.kafka_extra_config, "consumer"),
            "bootstrap_servers": self.settings.kafka.bootstrap_servers,
            "group_id": self.group_id,
            "auto_offset_reset": "earliest",
            # Offsets are committed after the database write, never before.
            "enable_auto_commit": False,
            "max_poll_records": RELAY_BATCH,
        }

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*self.topics(), **self.consumer_options())

    def topics(self) -> list[str]:
        """The topics the consumer reads."""
        kafka = self.settings.kafka
        return [
            kafka.topic_alerts,
            kafka.topic_decisions,
            kafka.topic_model_status,
            kafka.topic_detector_events,
        ]

    async def _consume_forever(self) -> None:
        backoff = 0.5
        while True:
            consumer = self._new_consumer()
            try:
                await consumer.start()
                log.info(
                    "reading alerts, decisions, model status and detector events",
                    topics=self.topics(),
                )
                backoff = 0.5
                while True:
                    await self._consume_batch(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "kafka consumer failed, retrying",
                    error=_error_text(error),
                    retry_in_seconds=backoff,
                )
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _consume_batch(self, consumer: AIOKafkaConsumer) -> None:
        await self._purge_when_due()
        batch = await consumer.getmany(timeout_ms=1000, max_records=RELAY_BATCH)
        records = [(msg.topic, msg.value) for msgs in batch.values() for msg in msgs]
        if not records:
            return
        counts = await asyncio.to_thread(
            store_records, self.sessions, self.settings, records, _now()
        )
        self._count(counts)
        # After the database write: a crash before this line re-reads the batch, which
        # the idempotent ingest makes harmless.
        await consumer.commit()

    async def _purge_when_due(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        try:
            gone = await asyncio.to_thread(purge_decisions, self.sessions, self.settings, _now())
        except Exception as error:  # the database: try again at the next purge
            log.warning("decisions not purged", error=_error_text(error))
            return
        if gone:
            log.info("decisions purged", rows=gone)
        try:
            events = await asyncio.to_thread(
                purge_detector_events, self.sessions, self.settings, _now()
            )
        except Exception as error:  # the database: try again at the next purge
            log.warning("detector events not purged", error=_error_text(error))
            return
        if events:
            log.info("detector events purged", rows=events)

    def _count(self, counts: ConsumedCounts) -> None:
        m = self.metrics
        m.alerts_ingested.labels("new").inc(counts.alerts_new)
        m.alerts_ingested.labels("duplicate").inc(counts.alerts_duplicate)
        m.statuses_ingested.labels("stored").inc(counts.statuses)
        m.detector_events_ingested.labels("stored").inc(counts.detector_events)
        m.detector_events_ingested.labels("unchanged").inc(counts.detector_events_unchanged)
        for topic, n in counts.invalid.items():
            if topic == self.settings.kafka.topic_alerts:
                m.alerts_ingested.labels("invalid").inc(n)
            elif topic == self.settings.kafka.topic_model_status:
                m.statuses_ingested.labels("invalid").inc(n)
            elif topic == self.settings.kafka.topic_detector_events:
                m.detector_events_ingested.labels("invalid").inc(n)

    # --- relay ---------------------------------------------------------------------

    async def _relay_forever(self) -> None:
        interval = self.settings.api.outbox_interval_seconds
        failures = 0
        while True:
            # After failures, wait longer (the broker is likely down); a new verdict
            # still wakes the relay at once.
            wait = min(interval * 2**failures, max(interval, MAX_BACKOFF_SECONDS))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()
            try:
                while True:
                    result = await self.relay_once()
                    failures = min(failures + 1, 10) if result.failed else 0
                    if result.failed or result.pending < RELAY_BATCH:
                        break  # else a full batch was sent: more may be waiting
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database, most likely; try again later
                failures = min(failures + 1, 10)
                log.warning("outbox relay failed", error=_error_text(error))

    def producer_options(self) -> dict[str, Any]:
        """The producer's keyword arguments: defaults, the extra config, then what is fixed."""
        return idempotent_producer_options(
            self.settings.kafka.kafka_extra_config,
            self.settings.kafka.bootstrap_servers,
            client_id=CLIENT_ID,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = await started_producer(self.producer_options())
        return self._producer

    async def _close_producer(self) -> None:
        """Drop the producer *without* waiting for what it still holds.

        aiokafka's ``stop`` flushes first, and an idempotent producer retries a batch
        for as long as its broker is unreachable: that would never end. Its sender task
        is cancelled instead, so records not yet acknowledged are abandoned for good (a
        later reconnect cannot deliver them behind our back); their outbox rows are still
        pending and a fresh producer sends them.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        sender_task = getattr(getattr(producer, "_sender", None), "sender_task", None)
        if sender_task is not None and not sender_task.done():
            sender_task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout=5)

    async def relay_once(self, delivery_timeout: float = DELIVERY_TIMEOUT_SECONDS) -> RelayResult:
        """Send one batch of pending outbox rows, in order; mark them sent or failed.

        A record not acknowledged within ``delivery_timeout`` counts as failed (aiokafka
        itself would retry forever while the broker is down), and the producer holding it
        is dropped, so it cannot turn up later next to the retry.
        """
        rows = await asyncio.to_thread(self._pending)
        if not rows:
            return RelayResult(0, 0, 0)
        futures: list[asyncio.Future[Any]] = []
        error_text = ""
        try:
            producer = await self._ensure_producer()
            for _, topic, key, value in rows:
                futures.append(
                    await producer.send(
                        topic,
                        value=value.encode(),
                        key=key.encode() if key is not None else None,
                    )
                )
        except Exception as error:
            error_text = _error_text(error)
        # Wait for every record handed to the producer, even after a failure: one
        # marked failed but delivered anyway would be sent twice.
        if futures:
            await asyncio.wait(futures, timeout=delivery_timeout)
        sent: list[int] = []
        failed: list[int] = []
        for index, (row_id, *_) in enumerate(rows):
            future = futures[index] if index < len(futures) else None
            if future is None:  # never handed to the producer
                failed.append(row_id)
                continue
            problem = delivery_problem(future, delivery_timeout)
            if problem is None:
                sent.append(row_id)
            else:
                failed.append(row_id)
                error_text = error_text or problem
        if failed:
            # A fresh producer next time: this one may hold a dead connection.
            await self._close_producer()
        await asyncio.to_thread(self._settle, sent, failed, error_text)
        if sent:
            self.metrics.outbox_delivered.inc(len(sent))
        if failed:
            self.metrics.outbox_failed.inc(len(failed))
            log.warning("outbox delivery failed, will retry", records=len(failed), error=error_text)
        return RelayResult(len(rows), len(sent), len(failed))

    def _pending(self) -> list[tuple[int, str, str | None, str]]:
        with self.sessions() as session:
            return [
                (row.id, row.topic, row.key, row.value)
                for row in review.pending_outbox(review.Context(session), limit=RELAY_BATCH)
            ]

    def _settle(self, sent: list[int], failed: list[int], error: str) -> None:
        with self.sessions() as session:
            ctx = review.Context(session, clock=_now)
            if sent:
                review.mark_sent(ctx, ids=sent)
            if failed:
                review.mark_failed(ctx, ids=failed, error=error)
