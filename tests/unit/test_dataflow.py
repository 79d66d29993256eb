"""The Bytewax flow run in process: TestingSource of Kafka messages in, TestingSinks out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
    ThresholdChange,
    Transaction,
    alert_id_for,
)
from detector.dataflow import build_flow
from detector.flow.kafka import Sinks
from detector.flow.recovery import recovery_config
from detector.settings import DetectorSettings, Settings
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


def control(control_id: str, **fields: Any) -> Control:
    return Control(
        control_id=control_id,
        requested_by="admin",
        requested_at=datetime.now(UTC),
        **fields,
    )


BLOCK_ALL = ThresholdChange(mode="fixed", review_threshold=0.0, block_threshold=0.0)


def test_a_control_message_changes_the_thresholds_and_shows_in_the_status() -> None:
    feed = Feed()
    ordinary_traffic(feed, 5)
    feed.control(control("block-all", action="set_thresholds", thresholds=BLOCK_ALL))
    out = run(feed)
    assert len(out.decisions) == 5
    assert out.dead_letters == []
    last = out.statuses[-1]
    assert last.last_control_id == "block-all"
    assert (last.threshold_mode, last.review_threshold, last.block_threshold) == (
        "fixed",
        0.0,
        0.0,
    )
    # The change applies to what comes next, without a restart.
    feed.transaction(tx("after", "card1", "term1", 12.0, minutes=1000))
    out = run(feed)
    assert next(d for d in out.decisions if d.transaction_id == "after").decision == "block"


def test_a_status_is_published_as_soon_as_a_control_is_applied() -> None:
    slow = settings(status_interval_seconds=3600)
    feed = Feed()
    ordinary_traffic(feed, 3)
    without = run(feed, slow).statuses
    feed.control(control("c1", action="set_thresholds", thresholds=BLOCK_ALL))
    with_control = run(feed, slow).statuses
    assert len(with_control) == len(without) + 1
    assert with_control[-1].last_control_id == "c1"


def test_invalid_and_rejected_controls_are_dead_letters() -> None:
    feed = Feed()
    ordinary_traffic(feed, 3)
    bad = feed.raw(b'{"control_id": "x", "action": "reboot"}', topic="control", key=b"model")
    feed.control(control("ghost", action="set_deciding_model", model_name="hybrid-tail-nope"))
    out = run(feed)
    assert len(out.decisions) == 3
    invalid, unknown = sorted(out.dead_letters, key=lambda d: d.offset is None)
    assert invalid.reason is RejectReason.INVALID
    assert (invalid.source_topic, invalid.offset, invalid.value) == (
        "control",
        bad.offset,
        bad.value,
    )
    assert "action" in invalid.error
    assert unknown.reason is RejectReason.INVALID
    assert unknown.source_topic == "control"
    assert "unknown model 'hybrid-tail-nope'" in unknown.error
    assert Control.model_validate_json(unknown.value).control_id == "ghost"
    assert {s.last_control_id for s in out.statuses} == {None}


def test_challengers_get_a_status_each_and_can_take_over() -> None:
    feed = Feed()
    ordinary_traffic(feed, 6)
    messages: list[SinkMessage] = []
    out = run(feed, settings(challengers=["tree"]), status_messages=messages)
    assert {d.model_name for d in out.decisions} == {"hybrid-tail-logreg"}
    assert {m.key for m in messages} == {b"hybrid-tail-logreg", b"hybrid-tail-tree"}
    for msg, status in zip(messages, out.statuses, strict=True):
        assert msg.key == status.model_name.encode()
    final = {s.model_name: s for s in out.statuses[-2:]}
    assert final["hybrid-tail-logreg"].deciding and not final["hybrid-tail-tree"].deciding
    assert all(s.transactions_scored == 6 for s in final.values())

    # Controls skip the card and terminal steps: what was sent after one is decided after it.
    feed.control(control("switch", action="set_deciding_model", model_name="hybrid-tail-tree"))
    feed.transaction(tx("after", "card1", "term1", 12.0, minutes=1000))
    out = run(feed, settings(challengers=["tree"]))
    assert next(d for d in out.decisions if d.transaction_id == "after").model_name == (
        "hybrid-tail-tree"
    )
    final = {s.model_name: s for s in out.statuses[-2:]}
    assert final["hybrid-tail-tree"].deciding and not final["hybrid-tail-logreg"].deciding
    assert {s.last_control_id for s in final.values()} == {"switch"}


def test_a_cluster_on_one_host_shares_one_recovery_folder(tmp_path: Path) -> None:
    cluster = "127.0.0.1:2101;127.0.0.1:2102;127.0.0.1:2103"
    for process in (2, 0, 1, 0):  # in any order, and again after a restart
        recovery_config(
            Settings(
                detector=DetectorSettings(
                    recovery_dir=tmp_path, addresses=cluster, process_id=process
                )
            )
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part-0.sqlite3",
        "part-1.sqlite3",
        "part-2.sqlite3",
    ]


def test_a_single_process_makes_its_store_once(tmp_path: Path) -> None:
    recovery_config(Settings(detector=DetectorSettings(recovery_dir=tmp_path)))
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    recovery_config(Settings(detector=DetectorSettings(recovery_dir=tmp_path)))
    assert before == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert list(before) == ["part-0.sqlite3"]


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


def test_a_resumed_model_publishes_the_decision_of_record_again() -> None:
    feed = Feed()
    sent = ordinary_traffic(feed, 4)
    first = sent[2]
    record = Decision(
        transaction_id=first.transaction_id,
        card_id=first.card_id,
        terminal_id=first.terminal_id,
        amount=first.amount,
        score=0.97,
        decision="block",
        reasons=["decided before a crash"],
        model_name="hybrid-tail-logreg",
        model_version="0.1.0",
        transaction_time=first.timestamp,
        scored_at=START,
    )
    published = {(first.card_id, first.transaction_id): record.model_dump_json(indent=1).encode()}
    decisions: list[SinkMessage] = []
    alerts: list[SinkMessage] = []
    sinks = Sinks(
        decisions=TestingSink(decisions),
        alerts=TestingSink(alerts),
        dead_letters=TestingSink([]),
        model_status=TestingSink([]),
    )
    flow = build_flow(
        settings(),
        source=TestingSource(feed.messages),
        sinks=sinks,
        read_back=lambda _: dict(published),
    )
    run_main(flow)
    by_id = dict(
        zip(
            (json.loads(v)["transaction_id"] for v in values(decisions)),
            values(decisions),
            strict=True,
        )
    )
    assert by_id[first.transaction_id] == published[(first.card_id, first.transaction_id)]
    [alert] = [Alert.model_validate_json(v) for v in values(alerts) if b'"tx2"' in v]
    assert (alert.decision, alert.score, alert.reasons) == ("block", 0.97, record.reasons)
    assert alert.created_at == START


def _scored_by_core(events: list[Transaction | Label], config: Settings) -> dict[str, Decision]:
    from detector.core import ScoringCore
    from detector.items import Scored

    core = ScoringCore(config.scoring.placed(shards=config.detector.shards))
    out: dict[str, Decision] = {}
    for event in events:
        for item in core.process(event):
            if isinstance(item, Scored):
                out[item.transaction.transaction_id] = item.to_decision()
    return out


def _comparable(d: Decision) -> tuple[Any, ...]:
    return (d.score, d.decision, tuple(d.reasons), d.model_name)


def test_a_cards_transactions_reach_the_model_in_the_cards_order() -> None:
    # Regression: sent at once to a fresh detector, fifteen transactions at a card's home
    # terminal and then a 4,000 payment at a new terminal twenty hours later. The model
    # step scored the 4,000 first (it came through another terminal key in the same
    # batch), with a model that had learned nothing: 0.0, allowed.
    feed = Feed()
    events: list[Transaction | Label] = []
    for i in range(15):
        events.append(tx(f"home{i}", "card-7", "term-home", 30.0 + i, minutes=30 * i))
    # The new terminal's key sorts before the home terminal's, as it did in the report.
    events.append(tx("big", "card-7", "term-a-new", 4000.0, minutes=7 * 60 + 20 * 60))
    for event in events:
        assert isinstance(event, Transaction)
        feed.transaction(event)
    config = settings(threshold_mode="fixed")
    # Read at once, as a Kafka input reads a backlog: one batch.
    flow = {
        d.transaction_id: d for d in run_messages(feed.messages, config, batch_size=100).decisions
    }
    core = _scored_by_core(events, config)
    assert flow["big"].decision == core["big"].decision == "block"
    assert {k: _comparable(v) for k, v in flow.items()} == {
        k: _comparable(v) for k, v in core.items()
    }


def _simulated_events(n: int) -> list[Transaction | Label]:
    import itertools

    from detector.replay.simulator import SimulationConfig, simulate

    events: list[Transaction | Label] = []
    records = itertools.islice(simulate(SimulationConfig(n_customers=60, n_terminals=80)), n)
    for r in records:
        events.append(r.transaction)
        if r.is_fraud:  # an analyst's verdict right away, on its card's partition
            t = r.transaction
            events.append(
                Label(
                    transaction_id=t.transaction_id,
                    card_id=t.card_id,
                    label="fraud",
                    source="analyst",
                    labeled_at=t.timestamp + timedelta(minutes=1),
                )
            )
    return events


def _feed_of(events: list[Transaction | Label]) -> Feed:
    feed = Feed()
    for event in events:
        if isinstance(event, Transaction):
            feed.transaction(event)
        else:
            feed.raw(event.model_dump_json().encode(), topic="labels", key=event.card_id.encode())
    return feed


def test_the_flow_and_the_scoring_core_decide_alike() -> None:
    events = _simulated_events(1500)
    config = settings(threshold_mode="fixed", status_interval_seconds=3600.0)
    feed = _feed_of(events)
    flow = {
        d.transaction_id: d for d in run_messages(feed.messages, config, batch_size=200).decisions
    }
    core = _scored_by_core(events, config)
    assert len(core) == sum(isinstance(e, Transaction) for e in events)
    assert {k: _comparable(v) for k, v in flow.items()} == {
        k: _comparable(v) for k, v in core.items()
    }


def test_with_two_workers_every_transaction_gets_the_same_card_features() -> None:
    # Card state is split between the workers; a card's events stay in order, so its
    # features do not depend on how the workers interleave. (A terminal counts the
    # transactions of its current hour as they arrive, and the shared model learns from
    # every transaction in the order it reaches it: those may.)
    from bytewax.testing import cluster_main

    from detector.core import ScoringCore
    from detector.items import Scored
    from models import CARD_FEATURES

    events = _simulated_events(1500)
    config = settings(threshold_mode="fixed", review_threshold=0.0, status_interval_seconds=3600.0)
    alerts: list[SinkMessage] = []
    decisions: list[SinkMessage] = []
    sinks = Sinks(
        decisions=TestingSink(decisions),
        alerts=TestingSink(alerts),
        dead_letters=TestingSink([]),
        model_status=TestingSink([]),
    )
    feed = _feed_of(events)
    flow = build_flow(config, source=TestingSource(feed.messages, batch_size=200), sinks=sinks)
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    core = ScoringCore(config.scoring.placed(shards=config.detector.shards))
    features = {}
    for event in events:
        for item in core.process(event):
            if isinstance(item, Scored):
                features[item.transaction.transaction_id] = item.features
    assert len(values(decisions)) == len(features)
    assert sorted(json.loads(v)["transaction_id"] for v in values(decisions)) == sorted(features)
    for v in values(alerts):
        alert = Alert.model_validate_json(v)
        expected = features[alert.transaction.transaction_id]
        assert {k: v for k, v in alert.features.items() if k in CARD_FEATURES} == {
            k: v for k, v in expected.items() if k in CARD_FEATURES
        }
    assert alerts, "some transactions were alerted"
