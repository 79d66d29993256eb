"""Synchronous scoring (``POST /api/score``): a transaction decided by the running detector
while the caller waits.

The API never scores by itself: it publishes a ``ScoreRequest`` on ``score-requests``
(idempotent producer, ``acks=all``, the delivery awaited) and the detector decides the
transaction with the same scoring core and the same card and terminal state as any other,
then answers on ``score-replies``. One consumer per API process, in no group, reads every
partition of ``score-replies`` (from ``READ_BACK_SECONDS`` before it started) and
resolves the requests waiting for a transaction (by card and transaction id, so that a
reply to another process's request for the same transaction answers here too).
Requests are published only once it reads: a reply is never written behind its back.

Every decision read is stored (``score_replies``): the same transaction asked again, on
any API process and after a restart, gets that decision without asking the detector. A
request not answered within ``score_timeout_ms`` gets the fallback (``score_fallback``)
with ``degraded: true``; the detector still decides it, and its reply is stored when it
comes. A transaction the detector had decided before from ``transactions`` cannot be
answered with its decision (the API does not read ``decisions``): that is a ``ScoreConflict``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.kafka_options import aiokafka_options, idempotent_producer_options, started_producer
from api.metrics import ApiMetrics
from api.score.store import Key, purge_replies, store_replies, stored_decision
from detector import __version__
from detector.contracts import Decision, ScoreReply, ScoreRequest, Transaction
from detector.settings import Settings

log = structlog.get_logger("fraudstream.api")

CLIENT_ID = "fraudstream-api-score"
FALLBACK_MODEL = "fallback"
PURGE_EVERY_SECONDS = 3600.0
MAX_BACKOFF_SECONDS = 10.0
# How far back the replies are read when the consumer starts: replies to requests of
# this process published just before (or of other processes while this one restarted).
READ_BACK_SECONDS = 300.0
# Decisions kept in memory as well: the same transaction asked again at once is answered
# before its reply is stored.
RECENT_DECISIONS = 10_000
REQUEST_TIMEOUT_MS = 10_000


class ScoreConflict(Exception):
    """The transaction cannot be answered with a decision of its own (HTTP 409)."""


class RequestTooLarge(Exception):
    """The request would exceed the detector's record limit (HTTP 422)."""


@dataclass(frozen=True)
class Answer:
    """A transaction's decision and how it was reached (a ``SCORE_OUTCOMES`` value)."""

    decision: Decision
    outcome: str


@dataclass
class _Waiter:
    """The requests of one process waiting for one transaction's decision."""

    decided: asyncio.Future[Decision]
    requests: int = 0
    duplicate: bool = False  # the detector said it had seen the transaction before


def fallback_decision(tx: Transaction, kind: str, timeout_ms: int, now: datetime) -> Decision:
    """The answer without the detector: ``kind`` (allow or review), degraded, score 0."""
    return Decision(
        transaction_id=tx.transaction_id,
        card_id=tx.card_id,
        terminal_id=tx.terminal_id,
        amount=tx.amount,
        score=0.0,
        decision=kind,  # type: ignore[arg-type]
        reasons=[f"no decision from the detector within {timeout_ms} ms: fallback {kind}"],
        model_name=FALLBACK_MODEL,
        model_version=__version__,
        transaction_time=tx.timestamp,
        scored_at=now,
        degraded=True,
    )


def same_transaction(tx: Transaction, decision: Decision) -> bool:
    """Whether ``decision`` is of ``tx`` as posted (terminal, amount and time agree)."""
    return (decision.terminal_id, decision.amount, decision.transaction_time) == (
        tx.terminal_id,
        tx.amount,
        tx.timestamp,
    )


def _log_unpublished(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("score request not published", error=str(task.exception())[:300])


class Scorer:
    """The synchronous path of one API process; ``start`` and ``stop`` in its lifespan."""

    def __init__(
        self, settings: Settings, sessions: Callable[[], Session], metrics: ApiMetrics
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        self.timeout = settings.api.score_timeout_ms / 1000.0
        self._waiters: dict[Key, _Waiter] = {}
        # The latest decisions read, until they are surely stored (and a little longer).
        self._recent: collections.OrderedDict[Key, Decision] = collections.OrderedDict()
        # Request ids: unique to this process (random), then counted.
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)
        # Set once the reply consumer has its position in every partition: a request
        # published before then could be answered behind its back.
        self._reading = asyncio.Event()
        # decisions read, to store in the order they were read
        self._to_store: asyncio.Queue[tuple[ScoreReply, datetime]] = asyncio.Queue()
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start reading replies and storing them; returns at once."""
        self._tasks = [
            asyncio.create_task(self._consume_forever(), name="fraudstream-score-replies"),
            asyncio.create_task(self._store_forever(), name="fraudstream-score-store"),
            asyncio.create_task(self._connect(), name="fraudstream-score-producer"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout=5)

    # --- a request ---------------------------------------------------------------------

    async def score(self, tx: Transaction) -> Answer:
        """The decision of ``tx``: the detector's, stored, or the fallback (degraded).

        Raises ``ScoreConflict`` for a transaction decided before from ``transactions``
        (or scored before with other details), ``RequestTooLarge`` for one the detector
        would refuse.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        key = (tx.card_id, tx.transaction_id)
        stored = self._recent.get(key) or await asyncio.to_thread(
            stored_decision, self.sessions, key
        )
        if stored is not None:
            return Answer(self._checked(tx, stored), "stored")
        waiter = self._waiters.get(key)
        first = waiter is None
        if waiter is None:
            waiter = self._waiters[key] = _Waiter(loop.create_future())
        waiter.requests += 1
        try:
            if first:
                # The publication goes on after a timeout: the request is decided later.
                published = asyncio.create_task(self._publish(tx.card_id, self._request(tx)))
                published.add_done_callback(_log_unpublished)
                try:
                    await asyncio.wait_for(asyncio.shield(published), self._left(deadline))
                except TimeoutError:
                    return self._fallback(tx, "timeout")
                except Exception:  # the broker refused it (logged): answer anyway
                    return self._fallback(tx, "unpublished")
            try:
                decision = await asyncio.wait_for(
                    asyncio.shield(waiter.decided), self._left(deadline)
                )
            except TimeoutError:
                if not waiter.duplicate:
                    return self._fallback(tx, "timeout")
                stored = await asyncio.to_thread(stored_decision, self.sessions, key)
                if stored is None:
                    raise ScoreConflict(
                        f"transaction {tx.transaction_id!r} of card {tx.card_id!r} was decided "
                        f"before, not on a score request: its decision is on the "
                        f"{self.settings.kafka.topic_decisions!r} topic"
                    ) from None
                return Answer(self._checked(tx, stored), "stored")
            return Answer(self._checked(tx, decision), "decided")
        finally:
            waiter.requests -= 1
            if waiter.requests == 0 and self._waiters.get(key) is waiter:
                del self._waiters[key]

    def _left(self, deadline: float) -> float:
        return max(deadline - asyncio.get_running_loop().time(), 0.0)

    def _checked(self, tx: Transaction, decision: Decision) -> Decision:
        if not same_transaction(tx, decision):
            raise ScoreConflict(
                f"transaction {tx.transaction_id!r} of card {tx.card_id!r} was scored before "
                "with another terminal, amount or time: a transaction id names one transaction"
            )
        return decision

    def _fallback(self, tx: Transaction, outcome: str) -> Answer:
        kind = self.settings.api.score_fallback
        decision = fallback_decision(
            tx, kind, self.settings.api.score_timeout_ms, datetime.now(UTC)
        )
        # Counted (fraudstream_api_score_answers), not logged one by one: under load
        # that would be thousands of lines a second.
        return Answer(decision, outcome)

    def _request(self, tx: Transaction) -> bytes:
        request = ScoreRequest(
            request_id=f"{self._id_prefix}-{next(self._ids)}",
            transaction=tx,
            requested_at=datetime.now(UTC),
        )
        record = request.model_dump_json().encode()
        limit = self.settings.detector.max_message_bytes
        if len(record) > limit:
            raise RequestTooLarge(
                f"the score request would be {len(record)} bytes, over the detector's "
                f"limit of {limit} bytes (FRAUDSTREAM_MAX_MESSAGE_BYTES)"
            )
        return record

    async def _connect(self) -> None:
        """Connect the producer at start, so that the first request does not wait for it."""
        try:
            await self._ensure_producer()
        except Exception as error:  # the first request tries again
            log.warning("score requests producer not connected", error=str(error)[:300])

    async def _publish(self, card_id: str, record: bytes) -> None:
        """Publish a request once replies are read, and wait for the broker's
        acknowledgement."""
        await self._reading.wait()
        producer = await self._ensure_producer()
        sent = await producer.send(
            self.settings.kafka.topic_score_requests, value=record, key=card_id.encode()
        )
        await sent

    async def _ensure_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                options = idempotent_producer_options(
                    self.settings.kafka.kafka_extra_config,
                    self.settings.kafka.bootstrap_servers,
                    client_id=CLIENT_ID,
                    request_timeout_ms=REQUEST_TIMEOUT_MS,
                )
                self._producer = await started_producer({**options, "linger_ms": 0})
            return self._producer

    # --- the replies -------------------------------------------------------------------

    async def _consume_forever(self) -> None:
        topic = self.settings.kafka.topic_score_replies
        backoff = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                client_id=CLIENT_ID,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
                **aiokafka_options(self.settings.kafka.kafka_extra_config, "consumer"),
                bootstrap_servers=self.settings.kafka.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                fetch_max_wait_ms=100,
            )
            try:
                await consumer.start()
                await self._assign(consumer, topic)
                self._reading.set()
                backoff = 0.5
                while True:
                    batch = await consumer.getmany(timeout_ms=1000)
                    now = datetime.now(UTC)
                    for messages in batch.values():
                        for message in messages:
                            self._on_reply(message.value, now)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._reading.clear()
                log.warning(
                    "score replies consumer failed, retrying",
                    error=f"{type(error).__name__}: {error}"[:300],
                    retry_in_seconds=backoff,
                )
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _assign(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        """Every partition of ``topic``, from ``READ_BACK_SECONDS`` ago: the replies to
        come, and those that came while this process was starting (they are stored)."""
        # The whole cluster's metadata (``topics()`` keeps it from the consumer's own).
        cluster = await consumer._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise RuntimeError(f"topic {topic!r} does not exist")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        since = int((time.time() - READ_BACK_SECONDS) * 1000)
        offsets = await consumer.offsets_for_times({tp: since for tp in assigned})
        for tp in assigned:
            found = offsets.get(tp)
            if found is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, found.offset)
            await consumer.position(tp)  # resolved now, not at the first fetch
        log.info("reading score replies", topic=topic, partitions=len(assigned))

    def _on_reply(self, value: bytes | None, now: datetime) -> None:
        try:
            reply = ScoreReply.model_validate_json(value or b"")
        except ValidationError:
            self.metrics.score_replies.labels("invalid").inc()
            log.warning("invalid score reply skipped", size=len(value or b""))
            return
        waiter = self._waiters.get((reply.card_id, reply.transaction_id))
        if reply.decision is None:
            self.metrics.score_replies.labels("duplicate").inc()
            if waiter is not None:
                waiter.duplicate = True
            return
        self._recent[(reply.card_id, reply.transaction_id)] = reply.decision
        if len(self._recent) > RECENT_DECISIONS:
            self._recent.popitem(last=False)
        if waiter is not None and not waiter.decided.done():
            waiter.decided.set_result(reply.decision)
        else:
            self.metrics.score_replies.labels("late").inc()
        self._to_store.put_nowait((reply, now))

    async def _store_forever(self) -> None:
        """Store the decisions read, in batches, off the consumer's path; purge old ones."""
        keep = timedelta(days=self.settings.api.score_replies_keep_days)
        next_purge = time.monotonic()
        queue = self._to_store
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < 500:
                batch.append(queue.get_nowait())
            try:
                added = await asyncio.to_thread(store_replies, self.sessions, batch)
                self.metrics.score_replies.labels("stored").inc(added)
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_EVERY_SECONDS
                    gone = await asyncio.to_thread(
                        purge_replies, self.sessions, datetime.now(UTC) - keep
                    )
                    if gone:
                        log.info("score replies purged", rows=gone)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database: these decisions are not kept
                log.warning(
                    "score replies not stored",
                    replies=len(batch),
                    error=f"{type(error).__name__}: {error}"[:300],
                )
