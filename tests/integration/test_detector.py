"""The real dataflow against a real broker, checked with an independent Kafka client."""

from __future__ import annotations

import itertools
import json
import statistics
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bytewax.testing import run_main

from detector.contracts import Alert, Decision, Label, ModelStatus, Transaction
from detector.dataflow import build_flow
from detector.flow.recovery import recovery_config
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.factories import settings_with
from tests.integration.kafka_io import consume_all, produce

pytestmark = pytest.mark.slow


def run_detector(settings: Settings) -> None:
    """Run the production flow from Kafka until the end of its input, with recovery."""
    run_main(
        build_flow(settings, tail=False),
        epoch_interval=timedelta(seconds=1),
        recovery_config=recovery_config(settings),
    )


def tx_json(**fields: object) -> bytes:
    base: dict[str, object] = {
        "transaction_id": f"bad-{uuid.uuid4().hex[:8]}",
        "timestamp": "2018-04-02T10:00:00Z",
        "card_id": "card-bad",
        "terminal_id": "term-bad",
        "amount": 10.0,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


MALFORMED: dict[str, tuple[bytes, str]] = {
    "invalid json": (b'{"transaction_id": "x", ', "not_json"),
    "not an object": (b"[1, 2, 3]", "invalid"),
    "missing field": (tx_json(card_id=...), "invalid"),
    "extra field": (tx_json(cvv="123"), "invalid"),
    "string amount": (tx_json(amount="12.50"), "invalid"),
    "negative amount": (tx_json(amount=-5), "invalid"),
    "zero amount": (tx_json(amount=0), "invalid"),
    "NaN amount": (tx_json(amount=float("nan")), "invalid"),
    "infinite amount": (
        b'{"transaction_id": "inf", "timestamp": "2018-04-02T10:00:00Z", '
        b'"card_id": "c", "terminal_id": "t", "amount": 1e400}',
        "invalid",
    ),
    "timestamp without offset": (tx_json(timestamp="2018-04-02T10:00:00"), "invalid"),
    "unparseable timestamp": (tx_json(timestamp="yesterday"), "invalid"),
    "far-future timestamp": (tx_json(timestamp="2999-01-01T00:00:00Z"), "future_timestamp"),
    "oversize": (
        tx_json(merchant_category="x" * 50, metadata={"blob": "y" * 200}) + b" " * 70000,
        "oversize",
    ),
}


def planted_fraud(history: list[Transaction]) -> Transaction:
    """50x the card's usual amount, at a terminal the card never used, after its history."""
    card = Counter(tx.card_id for tx in history).most_common(1)[0][0]
    own = [tx for tx in history if tx.card_id == card]
    usual = statistics.fmean(tx.amount for tx in own)
    used = {tx.terminal_id for tx in own}
    last = max(tx.timestamp for tx in history)
    return Transaction(
        transaction_id="planted-fraud-1",
        timestamp=last + timedelta(minutes=5),
        card_id=card,
        terminal_id=next(f"term-new-{i}" for i in itertools.count() if f"term-new-{i}" not in used),
        amount=round(usual * 50, 2),
    )


def test_detector_end_to_end(unique_topics: Settings, tmp_path: Path) -> None:
    settings = settings_with(
        unique_topics, recovery_dir=tmp_path / "recovery", status_interval_seconds=0.5
    )
    records = list(
        itertools.islice(simulate(SimulationConfig(n_customers=300, n_terminals=600, seed=7)), 3000)
    )
    history = [r.transaction for r in records]
    fraud = planted_fraud(history)
    valid = [*history, fraud]
    batch: list[tuple[str | None, bytes]] = [
        (tx.card_id, tx.model_dump_json().encode()) for tx in valid
    ]
    # Malformed records sit among the valid ones, and one transaction arrives twice.
    for i, (value, _) in enumerate(MALFORMED.values()):
        batch.insert(100 + i * 150, ("card-bad", value))
    duplicate = history[10]
    batch.insert(2500, (duplicate.card_id, duplicate.model_dump_json().encode()))
    produce(settings, settings.kafka.topic_transactions, batch)

    run_detector(settings)

    decisions = [
        Decision.model_validate_json(v)
        for v in consume_all(settings, settings.kafka.topic_decisions)
    ]
    decided = Counter(d.transaction_id for d in decisions)
    assert set(decided) == {tx.transaction_id for tx in valid}
    assert max(decided.values()) == 1, "a transaction was decided twice"
    # Scores are fraud probabilities: before any label, few transactions score 0.5 or
    # more (of the raw scores of this traffic, about half do).
    assert sum(d.score >= 0.5 for d in decisions) < 0.05 * len(decisions)

    dead = [json.loads(v) for v in consume_all(settings, settings.kafka.topic_dead_letters)]
    reasons = Counter(d["reason"] for d in dead)
    expected = Counter(reason for _, reason in MALFORMED.values()) + Counter({"duplicate": 1})
    assert reasons == expected
    for d in dead:
        assert d["error"], d
        assert d["source_topic"] == settings.kafka.topic_transactions
    originals = {d["value_base64"] for d in dead if d["reason"] != "duplicate"}
    import base64

    assert originals == {base64.b64encode(v).decode() for v, _ in MALFORMED.values()}
    assert all(d["offset"] is not None for d in dead if d["reason"] != "duplicate")

    alerts = [
        Alert.model_validate_json(v) for v in consume_all(settings, settings.kafka.topic_alerts)
    ]
    by_tx = {a.transaction.transaction_id: a for a in alerts}
    planted_decision = next(d for d in decisions if d.transaction_id == fraud.transaction_id)
    assert fraud.transaction_id in by_tx, f"the planted fraud was not alerted: {planted_decision}"
    planted = by_tx[fraud.transaction_id]
    assert planted.decision in ("review", "block")
    text = " | ".join(planted.reasons)
    assert "x this card's 30-day average" in text and "first use of terminal" in text, text
    assert planted.features["card_amount_ratio"] > 20
    assert len({a.alert_id for a in alerts}) == len(alerts)
    non_allow = {d.transaction_id for d in decisions if d.decision != "allow"}
    # and the allowed transactions of the exploration sample (EXPLORATION_SHARE), reviewed
    explored = {d.transaction_id for d in decisions if d.exploration}
    assert all(d.decision == "allow" for d in decisions if d.exploration)
    assert set(by_tx) == non_allow | explored
    assert all(by_tx[t].exploration and by_tx[t].decision == "review" for t in explored)

    statuses = [
        ModelStatus.model_validate_json(v)
        for v in consume_all(settings, settings.kafka.topic_model_status)
    ]
    before = statuses[-1]
    assert before.transactions_scored == len(valid)
    assert before.labels_by_source.get("analyst", 0) == 0
    assert before.calibration_labels == 0 and before.calibration_error is None

    # An analyst confirms the fraud; then more traffic arrives, and the detector restarts
    # from its recovery snapshot.
    label = Label(
        transaction_id=fraud.transaction_id,
        card_id=fraud.card_id,
        label="fraud",
        source="analyst",
        labeled_at=datetime.now(UTC),
    )
    produce(
        settings, settings.kafka.topic_labels, [(label.card_id, label.model_dump_json().encode())]
    )
    later = [
        tx.model_copy(
            update={
                "transaction_id": f"later-{i}",
                "timestamp": fraud.timestamp + timedelta(minutes=10 + i),
            }
        )
        for i, tx in enumerate(history[:200])
    ]
    produce(
        settings,
        settings.kafka.topic_transactions,
        [(tx.card_id, tx.model_dump_json().encode()) for tx in later],
    )

    run_detector(settings)

    decisions = [
        Decision.model_validate_json(v)
        for v in consume_all(settings, settings.kafka.topic_decisions)
    ]
    decided = Counter(d.transaction_id for d in decisions)
    assert set(decided) == {tx.transaction_id for tx in [*valid, *later]}
    assert max(decided.values()) == 1, "the restart decided again what was already decided"

    statuses = [
        ModelStatus.model_validate_json(v)
        for v in consume_all(settings, settings.kafka.topic_model_status)
    ]
    after = statuses[-1]
    assert after.transactions_scored == len(valid) + len(later), "model state was not restored"
    assert after.labels_by_source.get("analyst") == 1
    assert after.labels_learned["fraud"] > before.labels_learned["fraud"]
    # the label met the raw score the fraud had when it was decided, before the restart
    assert after.calibration_labels == 1
