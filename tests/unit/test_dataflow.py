"""The Bytewax flow run in process: TestingSource of Kafka messages in, TestingSinks out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main

from detector.contracts import (
    Alert,
    Control,
    DeadLetter,
    Decision,
    Label,
    ModelStatus,
    RejectReason,
    Transaction,
    alert_id_for,
)
from detector.dataflow import build_flow
from detector.flow.kafka import Sinks
from detector.settings import Settings
from tests.factories import settings_of

START = datetime(2024, 1, 1, tzinfo=UTC)
Message = KafkaSourceMessage[bytes | None, bytes | None]


def settings(**overrides: Any) -> Settings:
    # A tiny status interval: the model publishes its status after every event.
    fields: dict[str, Any] = {"status_interval_seconds": 1e-6, "max_message_bytes": 1024}
    fields.update(overrides)
    return settings_of(**fields)


def tx(tx_id: str, card: str, terminal: str, amount: float, minutes: float) -> Transaction:
    return Transaction(
        transaction_id=tx_id,
        timestamp=START + timedelta(minutes=minutes),
        card_id=card,
        terminal_id=terminal,
        amount=amount,
    )


@dataclass
class Feed:
    """Kafka records with increasing offsets per topic, as a broker would hand them out."""

    messages: list[Message] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)

    def raw(
        self,
        value: bytes | None,
        topic: str = "transactions",
        key: bytes | None = b"k",
        partition: int = 0,
    ) -> Message:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        msg: Message = KafkaSourceMessage(
            key=key, value=value, topic=topic, headers=[], partition=partition, offset=offset
        )
        self.messages.append(msg)
        return msg

    def transaction(self, t: Transaction) -> Message:
        return self.raw(t.model_dump_json().encode(), key=t.card_id.encode())

    def label(self, t: Transaction, verdict: str = "fraud", source: str = "analyst") -> Message:
        lab = Label(
            transaction_id=t.transaction_id,
            card_id=t.card_id,
            label=verdict,  # type: ignore[arg-type]
            source=source,
            labeled_at=t.timestamp + timedelta(days=2),
        )
        return self.raw(lab.model_dump_json().encode(), topic="labels", key=t.card_id.encode())

    def control(self, c: Control) -> Message:
        return self.raw(c.model_dump_json().encode(), topic="control", key=b"model")


@dataclass
class Outputs:
    decisions: list[Decision]
    alerts: list[Alert]
    dead_letters: list[DeadLetter]
    statuses: list[ModelStatus]


SinkMessage = KafkaSinkMessage[bytes | None, bytes | None]


def values(messages: list[SinkMessage]) -> list[bytes]:
    out = []
    for msg in messages:
        assert msg.value is not None
        out.append(msg.value)
    return out


def run(
    feed: Feed, config: Settings | None = None, status_messages: list[SinkMessage] | None = None
) -> Outputs:
    return run_messages(feed.messages, config, status_messages)


def run_messages(
    messages: list[Any],
    config: Settings | None = None,
    status_messages: list[SinkMessage] | None = None,
    batch_size: int = 1,
) -> Outputs:
    decisions: list[SinkMessage] = []
    alerts: list[SinkMessage] = []
    dead_letters: list[SinkMessage] = []
    statuses: list[SinkMessage] = status_messages if status_messages is not None else []
    sinks = Sinks(
        decisions=TestingSink(decisions),
        alerts=TestingSink(alerts),
        dead_letters=TestingSink(dead_letters),
        model_status=TestingSink(statuses),
    )
    source = TestingSource(messages, batch_size=batch_size)
    flow = build_flow(config or settings(), source=source, sinks=sinks)
    run_main(flow)
    return Outputs(
        decisions=[Decision.model_validate_json(v) for v in values(decisions)],
        alerts=[Alert.model_validate_json(v) for v in values(alerts)],
        dead_letters=[DeadLetter.model_validate_json(v) for v in values(dead_letters)],
        statuses=[ModelStatus.model_validate_json(v) for v in values(statuses)],
    )


def ordinary_traffic(feed: Feed, n: int = 30) -> list[Transaction]:
    sent = []
    for i in range(n):
        t = tx(f"tx{i}", f"card{i % 3}", f"term{i % 4}", 10.0 + i, minutes=10 * i)
        feed.transaction(t)
        sent.append(t)
    return sent


def test_every_valid_transaction_yields_exactly_one_decision() -> None:
    feed = Feed()
    sent = ordinary_traffic(feed)
    out = run(feed)
    assert sorted(d.transaction_id for d in out.decisions) == sorted(t.transaction_id for t in sent)
    by_id = {d.transaction_id: d for d in out.decisions}
    for t in sent:
        d = by_id[t.transaction_id]
        assert (d.card_id, d.terminal_id, d.amount) == (t.card_id, t.terminal_id, t.amount)
        assert d.transaction_time == t.timestamp and 0.0 <= d.score <= 1.0
    # Alerts are exactly the reviewed and blocked decisions.
    flagged = {d.transaction_id for d in out.decisions if d.decision != "allow"}
    assert {a.transaction.transaction_id for a in out.alerts} == flagged
    assert all(
        a.alert_id == alert_id_for(a.transaction.card_id, a.transaction.transaction_id)
        for a in out.alerts
    )
    assert out.dead_letters == []
    assert out.statuses[-1].transactions_scored == len(sent)
    assert sum(out.statuses[-1].decisions.values()) == len(sent)


def test_decisions_are_keyed_by_card() -> None:
    feed = Feed()
    ordinary_traffic(feed, 6)
    captured: list[SinkMessage] = []
    sinks = Sinks(
        decisions=TestingSink(captured),
        alerts=TestingSink([]),
        dead_letters=TestingSink([]),
        model_status=TestingSink([]),
    )
    run_main(build_flow(settings(), source=TestingSource(feed.messages), sinks=sinks))
    assert len(captured) == 6
    for msg, value in zip(captured, values(captured), strict=True):
        assert msg.key == json.loads(value)["card_id"].encode()


BAD_RECORDS: list[tuple[bytes | None, RejectReason, str]] = [
    (b"{oops", RejectReason.NOT_JSON, "not valid JSON"),
    (b"", RejectReason.NOT_JSON, "not valid JSON"),
    (None, RejectReason.INVALID, "empty record"),
    (b"[1, 2, 3]", RejectReason.INVALID, "Input should be an object"),
    (
        tx("t", "c", "m", 1.0, 0)
        .model_dump_json()
        .replace('"amount":1.0', '"amount":"1.0"')
        .encode(),
        RejectReason.INVALID,
        "amount: Input should be a valid number",
    ),
    (
        tx("t", "c", "m", 1.0, 0)
        .model_dump_json()
        .replace('"amount":1.0', '"amount":-1.0')
        .encode(),
        RejectReason.INVALID,
        "greater than 0",
    ),
    (
        tx("t", "c", "m", 1.0, 0).model_dump_json().replace("}", ',"extra":true}').encode(),
        RejectReason.INVALID,
        "extra: Extra inputs are not permitted",
    ),
    (b"{" + b" " * 2000 + b"}", RejectReason.OVERSIZE, "exceeds 1024 bytes"),
    (
        Transaction(
            transaction_id="future",
            timestamp=datetime.now(UTC) + timedelta(days=1),
            card_id="c",
            terminal_id="m",
            amount=1.0,
        )
        .model_dump_json()
        .encode(),
        RejectReason.FUTURE_TIMESTAMP,
        "later than now plus",
    ),
]


def test_malformed_records_land_in_dead_letters_whole() -> None:
    feed = Feed()
    good = ordinary_traffic(feed, 3)
    sent = []
    for i, (value, _, _) in enumerate(BAD_RECORDS):
        sent.append(feed.raw(value, key=f"key{i}".encode(), partition=i % 3))
    bad_label = feed.raw(b'{"transaction_id": "tx0"}', topic="labels", partition=2)
    out = run(feed)

    assert {d.transaction_id for d in out.decisions} == {t.transaction_id for t in good}
    assert len(out.dead_letters) == len(BAD_RECORDS) + 1
    by_offset = {(d.source_topic, d.offset): d for d in out.dead_letters}
    for msg, (value, reason, message) in zip(sent, BAD_RECORDS, strict=True):
        letter = by_offset["transactions", msg.offset]
        assert letter.reason is reason
        assert message in letter.error
        assert letter.value == (value or b"")
        assert letter.partition == msg.partition
        assert letter.key_base64 is not None
        assert letter.failed_at.tzinfo is not None
    label_letter = by_offset["labels", bad_label.offset]
    assert label_letter.reason is RejectReason.INVALID
    assert "card_id: Field required" in label_letter.error
    assert label_letter.partition == 2


def test_a_label_is_learned_and_shows_in_the_model_status() -> None:
    feed = Feed()
    sent = ordinary_traffic(feed, 10)
    feed.label(sent[4], "fraud", "analyst")
    feed.label(sent[5], "legit", "chargeback")
    out = run(feed)

    assert len(out.decisions) == 10
    assert out.dead_letters == []
    learned = [sum(s.labels_learned.values()) for s in out.statuses]
    assert learned[0] == 0
    assert learned == sorted(learned)  # never shrinks
    last = out.statuses[-1]
    assert last.labels_learned == {"fraud": 1, "legit": 1}
    assert last.labels_by_source == {"analyst": 1, "chargeback": 1}
    assert last.transactions_scored == 10
    assert 0.0 < last.classifier_weight < 1.0
    assert (last.review_threshold, last.block_threshold) == (0.6, 0.9)


def test_label_for_an_unknown_transaction_is_a_dead_letter() -> None:
    feed = Feed()
    sent = ordinary_traffic(feed, 3)
    ghost = tx("ghost", sent[0].card_id, "term0", 5.0, minutes=1)
    feed.label(ghost)  # labelled two days after the ghost's time
    out = run(feed)
    assert out.dead_letters == [], "the label may still be waiting for its transaction"
    # Once the card's own transactions pass the label's time, it is given up on.
    feed.transaction(tx("later", sent[0].card_id, "term0", 7.0, minutes=3 * 24 * 60))
    out = run(feed)
    assert len(out.decisions) == 4
    [letter] = out.dead_letters
    assert letter.reason is RejectReason.UNKNOWN_TRANSACTION
    assert "'ghost'" in letter.error
    assert letter.source_topic == "labels"
    assert Label.model_validate_json(letter.value).transaction_id == "ghost"
    assert out.statuses[-1].labels_learned == {"fraud": 0, "legit": 0}


def test_a_label_read_before_its_transaction_waits_for_it() -> None:
    # A backlog: the labels topic is read ahead of the transactions it is about.
    feed = Feed()
    early = tx("early", "card1", "term1", 10.0, minutes=5)
    feed.label(early)
    feed.transaction(early)
    out = run(feed)
    assert out.dead_letters == []
    assert [d.transaction_id for d in out.decisions] == ["early"]
    assert out.statuses[-1].labels_by_source == {"analyst": 1}


def test_duplicate_transaction_ids_give_one_decision_and_one_dead_letter() -> None:
    feed = Feed()
    first = tx("dup", "card1", "term1", 12.0, minutes=0)
    feed.transaction(first)
    feed.transaction(tx("other", "card1", "term1", 13.0, minutes=5))
    feed.transaction(first)  # redelivered
    feed.transaction(tx("dup", "card1", "term2", 99.0, minutes=9))  # same id, other content
    out = run(feed)
    assert sorted(d.transaction_id for d in out.decisions) == ["dup", "other"]
    assert [d.amount for d in out.decisions if d.transaction_id == "dup"] == [12.0]
    assert len(out.dead_letters) == 2
    assert all(d.reason is RejectReason.DUPLICATE for d in out.dead_letters)
    assert all("'dup' was already decided" in d.error for d in out.dead_letters)
    assert {Transaction.model_validate_json(d.value).amount for d in out.dead_letters} == {
        12.0,
        99.0,
    }
    assert out.statuses[-1].transactions_scored == 2


def test_a_label_for_a_card_never_seen_gives_up_after_the_park_time() -> None:
    feed = Feed()
    ghost = tx("ghost", "card-never-seen", "term0", 5.0, minutes=1)
    raw = feed.label(ghost)
    ordinary_traffic(feed, 3)
    messages: list[Any] = [*feed.messages, TestingSource.PAUSE(timedelta(seconds=1.5))]
    out = run_messages(messages, settings(label_park_seconds=0.5))
    [letter] = out.dead_letters
    assert letter.reason is RejectReason.UNKNOWN_TRANSACTION
    assert "within 0.5 s of its label" in letter.error
    # The original record, whole, with its coordinates.
    assert letter.value == raw.value
    assert (letter.source_topic, letter.partition, letter.offset) == ("labels", 0, raw.offset)
    assert len(out.decisions) == 3


def test_core_dead_letters_keep_the_original_record() -> None:
    feed = Feed()
    first = tx("dup", "card1", "term1", 12.0, minutes=0)
    feed.transaction(first)
    # The same transaction again, as another JSON text (key order, spacing).
    again = json.dumps(json.loads(first.model_dump_json()), indent=1, sort_keys=True).encode()
    raw = feed.raw(again, key=b"card1", partition=2)
    out = run(feed)
    [letter] = out.dead_letters
    assert letter.reason is RejectReason.DUPLICATE
    assert letter.value == again
    assert (letter.source_topic, letter.partition, letter.offset) == ("transactions", 2, raw.offset)
    assert letter.key_base64 == "Y2FyZDE="  # b"card1"


def test_an_item_a_step_fails_on_is_a_dead_letter_and_the_flow_goes_on(
    monkeypatch: Any,
) -> None:
    import detector.flow.steps as dataflow

    real = dataflow.terminal_step

    def flaky(state: Any, item: Any, config: Any) -> Any:
        if getattr(item, "transaction", None) is not None and item.transaction.amount == 66.0:
            raise OverflowError("math range error")
        return real(state, item, config)

    monkeypatch.setattr(dataflow, "terminal_step", flaky)
    feed = Feed()
    feed.transaction(tx("before", "card1", "term1", 10.0, minutes=0))
    feed.transaction(tx("poison", "card1", "term1", 66.0, minutes=1))
    feed.transaction(tx("after", "card1", "term1", 11.0, minutes=2))
    out = run(feed)
    assert [d.transaction_id for d in out.decisions] == ["before", "after"]
    [letter] = out.dead_letters
    assert letter.reason is RejectReason.INTERNAL_ERROR
    assert letter.error == "terminal_state: OverflowError: math range error"
    assert Transaction.model_validate_json(letter.value).transaction_id == "poison"
