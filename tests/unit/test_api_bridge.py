"""The review service's Kafka clients without a broker: their options, and the outbox relay's
rule that a row is delivered only once the broker acknowledged its record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.bridge import CONSUMER_GROUP, Bridge, delivery_problem
from api.db import make_engine, session_factory, upgrade
from api.metrics import ApiMetrics
from api.tables import OutboxRecord
from tests.factories import settings_of

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SASL_PLAIN = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "review",
    "sasl.password": "review-secret",
}

Outcome = Literal["ok", "error", "pending", "cancelled"]


@dataclass
class FakeProducer:
    """Hands out one send future per record; ``outcomes`` says how each one ends."""

    outcomes: list[Outcome]
    sent: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    stopped: bool = False
    fail_on_send: int | None = None  # ``send`` itself raises for this record

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        index = len(self.sent)
        if index == self.fail_on_send:
            raise RuntimeError("the producer is closed")
        self.sent.append((topic, value, key))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        outcome = self.outcomes[index]
        if outcome == "ok":
            future.set_result(("metadata", index))
        elif outcome == "error":
            future.set_exception(RuntimeError(f"NotEnoughReplicas for record {index}"))
        elif outcome == "cancelled":
            future.cancel()
        return future

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[Callable[[], Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'review.db'}")
    upgrade(engine)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def bridge_for(sessions: Callable[[], Session], **settings: Any) -> Bridge:
    return Bridge(settings_of(**settings), sessions, ApiMetrics())


def add_rows(sessions: Callable[[], Session], n: int) -> list[int]:
    with sessions() as session:
        rows = [
            OutboxRecord(
                topic="labels", key=f"card-{i}", value=f'{{"n": {i}}}', created_at=T0, attempts=0
            )
            for i in range(n)
        ]
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]


def outbox(sessions: Callable[[], Session]) -> dict[int, tuple[bool, int, str | None]]:
    """id -> (sent, attempts, last error)."""
    with sessions() as session:
        return {
            row.id: (row.sent_at is not None, row.attempts, row.last_error)
            for row in session.scalars(select(OutboxRecord).order_by(OutboxRecord.id))
        }


def relay(bridge: Bridge, producer: FakeProducer, timeout: float = 0.2) -> Any:
    async def run() -> Any:
        bridge._producer = producer
        return await bridge.relay_once(delivery_timeout=timeout)

    return asyncio.run(run())


# --- options ---------------------------------------------------------------------------------


def test_producer_is_idempotent_and_waits_for_all_replicas(
    sessions: Callable[[], Session],
) -> None:
    options = bridge_for(sessions, bootstrap_servers="k1:9092,k2:9092").producer_options()
    assert options["enable_idempotence"] is True
    assert options["acks"] == "all"
    assert options["bootstrap_servers"] == "k1:9092,k2:9092"
    assert options["client_id"] == "fraudstream-api"


def test_consumer_commits_itself_and_reads_from_the_start(
    sessions: Callable[[], Session],
) -> None:
    options = bridge_for(sessions).consumer_options()
    assert options["enable_auto_commit"] is False
    assert options["auto_offset_reset"] == "earliest"
    assert options["group_id"] == CONSUMER_GROUP


@pytest.mark.parametrize("which", ["producer", "consumer"])
def test_both_clients_take_the_extra_config(sessions: Callable[[], Session], which: str) -> None:
    bridge = bridge_for(
        sessions,
        kafka_extra_config={**SASL_PLAIN, "client.id": "review-eu", "request.timeout.ms": "20000"},
    )
    options = bridge.producer_options() if which == "producer" else bridge.consumer_options()
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "PLAIN"
    assert options["sasl_plain_username"] == "review"
    assert options["sasl_plain_password"] == "review-secret"
    assert options["client_id"] == "review-eu"
    assert options["request_timeout_ms"] == 20000


def test_the_extra_config_cannot_undo_durability(sessions: Callable[[], Session]) -> None:
    # Accepted (they say what the producer does anyway), and the fixed values stay.
    bridge = bridge_for(sessions, kafka_extra_config={"acks": "-1", "enable.idempotence": "true"})
    assert (bridge.producer_options()["acks"], bridge.producer_options()["enable_idempotence"]) == (
        "all",
        True,
    )


class Recorder:
    """Stands in for an aiokafka client class: records how it was built."""

    built: ClassVar[list[tuple[tuple[Any, ...], dict[str, Any]]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).built.append((args, kwargs))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def test_the_bridge_builds_its_clients_with_those_options(
    sessions: Callable[[], Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Producers(Recorder):
        built: ClassVar[list[tuple[tuple[Any, ...], dict[str, Any]]]] = []

    class Consumers(Recorder):
        built: ClassVar[list[tuple[tuple[Any, ...], dict[str, Any]]]] = []

    producers, consumers = Producers, Consumers
    monkeypatch.setattr("api.kafka_options.AIOKafkaProducer", producers)
    monkeypatch.setattr("api.bridge.AIOKafkaConsumer", consumers)
    bridge = bridge_for(sessions, kafka_extra_config=SASL_PLAIN)

    async def build() -> None:
        await bridge._ensure_producer()
        bridge._new_consumer()

    asyncio.run(build())
    [(_, producer)] = producers.built
    [(topics, consumer)] = consumers.built
    assert producer == bridge.producer_options()
    assert consumer == bridge.consumer_options()
    assert topics == ("alerts", "decisions", "model-status", "detector-events")
    assert producer["sasl_plain_password"] == consumer["sasl_plain_password"] == "review-secret"


@pytest.mark.parametrize("which", ["producer", "consumer"])
def test_aiokafka_takes_those_options(sessions: Callable[[], Session], which: str) -> None:
    bridge = bridge_for(sessions, bootstrap_servers="127.0.0.1:1", kafka_extra_config=SASL_PLAIN)

    async def build() -> None:
        # Built, not started: aiokafka checks its arguments in the constructor.
        if which == "producer":
            AIOKafkaProducer(**bridge.producer_options())
        else:
            bridge._new_consumer()

    asyncio.run(build())


# --- delivery --------------------------------------------------------------------------------


def test_delivery_problem() -> None:
    async def check() -> None:
        loop = asyncio.get_running_loop()
        done, failed, pending, cancelled = (loop.create_future() for _ in range(4))
        done.set_result(None)
        failed.set_exception(RuntimeError("KafkaTimeoutError"))
        cancelled.cancel()
        assert delivery_problem(done, 1) is None
        assert delivery_problem(failed, 1) == "RuntimeError: KafkaTimeoutError"
        assert delivery_problem(pending, 1.5) == "not acknowledged within 1.5 s"
        assert "cancelled" in (delivery_problem(cancelled, 1) or "")

    asyncio.run(check())


def test_acknowledged_records_are_marked_sent(sessions: Callable[[], Session]) -> None:
    ids = add_rows(sessions, 3)
    producer = FakeProducer(["ok", "ok", "ok"])
    result = relay(bridge_for(sessions), producer)
    assert (result.pending, result.sent, result.failed) == (3, 3, 0)
    assert [(t, k) for t, _, k in producer.sent] == [
        ("labels", f"card-{i}".encode()) for i in range(3)
    ]
    assert outbox(sessions) == {i: (True, 0, None) for i in ids}
    assert not producer.stopped


@pytest.mark.parametrize("outcome", ["error", "pending", "cancelled"])
def test_a_record_not_acknowledged_stays_pending(
    sessions: Callable[[], Session], outcome: Outcome
) -> None:
    first, second, third = add_rows(sessions, 3)
    producer = FakeProducer(["ok", outcome, "ok"])
    bridge = bridge_for(sessions)
    result = relay(bridge, producer)
    assert (result.sent, result.failed) == (2, 1)
    rows = outbox(sessions)
    assert rows[first][0] and rows[third][0]
    sent, attempts, error = rows[second]
    assert (sent, attempts) == (False, 1) and error
    # The producer that holds an unacknowledged record is dropped: it cannot deliver it
    # later, next to the retry.
    assert producer.stopped and bridge._producer is None

    retry = FakeProducer(["ok"])
    assert relay(bridge, retry).sent == 1
    assert [v for _, v, _ in retry.sent] == [producer.sent[1][1]]
    assert outbox(sessions)[second][:2] == (True, 1)


def test_records_after_a_failed_send_call_are_not_sent(sessions: Callable[[], Session]) -> None:
    ids = add_rows(sessions, 3)
    producer = FakeProducer(["ok", "ok", "ok"], fail_on_send=1)
    result = relay(bridge_for(sessions), producer)
    assert (result.sent, result.failed) == (1, 2)
    rows = outbox(sessions)
    assert rows[ids[0]] == (True, 0, None)
    assert rows[ids[1]] == rows[ids[2]] == (False, 1, "RuntimeError: the producer is closed")


def test_a_late_acknowledgement_does_not_count(sessions: Callable[[], Session]) -> None:
    [row] = add_rows(sessions, 1)

    async def run() -> None:
        bridge = bridge_for(sessions)
        producer = FakeProducer(["pending"])
        bridge._producer = producer
        assert (await bridge.relay_once(delivery_timeout=0.05)).failed == 1
        # The acknowledgement arrives after the relay gave up on it: still pending, and
        # sent again by the next producer (at least once, never lost).
        producer.futures[0].set_result("late")
        await asyncio.sleep(0)

    asyncio.run(run())
    assert outbox(sessions)[row][:2] == (False, 1)
