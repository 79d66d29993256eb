"""Event contracts: what is accepted, what is refused, and how records round-trip."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from detector.contracts import (
    ALERT_NAMESPACE,
    DEAD_LETTER_VALUE_LIMIT,
    Alert,
    Control,
    DeadLetter,
    Decision,
    Label,
    ModelQuality,
    ModelStatus,
    RejectReason,
    ThresholdChange,
    Transaction,
    alert_id_for,
)

WHEN = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)


def tx_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "transaction_id": "tx-1",
        "timestamp": "2024-03-01T12:30:00+00:00",
        "card_id": "card-1",
        "terminal_id": "term-1",
        "amount": 42.5,
    }
    fields.update(overrides)
    return fields


def as_json(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


def transaction(**overrides: Any) -> Transaction:
    return Transaction.model_validate_json(as_json(tx_fields(**overrides)))


def test_minimal_transaction_parses_with_optional_fields_unset() -> None:
    tx = transaction()
    assert tx.transaction_id == "tx-1"
    assert tx.timestamp == WHEN
    assert tx.amount == 42.5
    assert tx.currency is None and tx.country is None and tx.metadata is None
    assert tx.epoch_seconds == WHEN.timestamp()


def test_full_transaction_parses_and_round_trips() -> None:
    tx = transaction(
        currency="EUR",
        merchant_category="5411",
        country="BE",
        channel="ecommerce",
        device_id="dev-9",
        metadata={"campaign": "spring"},
    )
    assert (tx.currency, tx.country, tx.channel) == ("EUR", "BE", "ecommerce")
    assert tx.metadata == {"campaign": "spring"}
    assert Transaction.model_validate_json(tx.model_dump_json()) == tx


def test_integer_amount_becomes_float_and_offsets_are_kept() -> None:
    tx = transaction(amount=12, timestamp="2024-03-01T14:30:00+02:00")
    assert tx.amount == 12.0 and isinstance(tx.amount, float)
    assert tx.timestamp == WHEN  # same instant, other offset
    assert tx.timestamp.utcoffset() is not None


def test_identifiers_are_stripped_and_must_not_be_blank() -> None:
    assert transaction(card_id="  card-7 ").card_id == "card-7"
    with pytest.raises(ValidationError, match="at least 1 character"):
        transaction(card_id="   ")
    with pytest.raises(ValidationError, match="at most 128"):
        transaction(transaction_id="x" * 129)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"amount": "42.5"}, "Input should be a valid number"),
        ({"amount": True}, "amount must be a number, not a boolean"),
        ({"amount": 0}, "greater than 0"),
        ({"amount": -3.0}, "greater than 0"),
        ({"card_id": 17}, "valid string"),
        ({"transaction_id": 17}, "valid string"),
        ({"timestamp": "2024-03-01T12:30:00"}, "timezone"),
        ({"timestamp": "not a date"}, "valid datetime"),
        ({"timestamp": 1709296200}, "valid datetime"),
        ({"currency": "eur"}, "pattern"),
        ({"country": "BEL"}, "pattern"),
        ({"metadata": {f"k{i}": "v" for i in range(33)}}, "at most 32 items"),
        ({"unexpected": 1}, "Extra inputs are not permitted"),
    ],
)
def test_transaction_rejects_bad_fields(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        transaction(**overrides)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_transaction_rejects_non_finite_amounts(literal: str) -> None:
    raw = as_json(tx_fields(amount=0.5)).replace(b"0.5", literal.encode())
    with pytest.raises(ValidationError, match="finite number"):
        Transaction.model_validate_json(raw)


@pytest.mark.parametrize(
    "missing", ["transaction_id", "timestamp", "card_id", "terminal_id", "amount"]
)
def test_transaction_requires_every_core_field(missing: str) -> None:
    fields = tx_fields()
    del fields[missing]
    with pytest.raises(ValidationError, match="Field required") as error:
        Transaction.model_validate_json(as_json(fields))
    assert error.value.errors()[0]["loc"] == (missing,)


def test_transaction_is_frozen() -> None:
    tx = transaction()
    with pytest.raises(ValidationError, match="frozen"):
        tx.amount = 1.0  # type: ignore[misc]


def test_label_parses_and_validates_kind_and_source() -> None:
    raw = {
        "transaction_id": "tx-1",
        "card_id": "card-1",
        "label": "fraud",
        "source": "chargeback",
        "labeled_at": "2024-03-04T09:00:00Z",
    }
    label = Label.model_validate_json(as_json(raw))
    assert label.label == "fraud" and label.source == "chargeback"
    assert Label.model_validate_json(label.model_dump_json()) == label
    with pytest.raises(ValidationError, match="'fraud' or 'legit'"):
        Label.model_validate_json(as_json({**raw, "label": "maybe"}))
    with pytest.raises(ValidationError, match="pattern"):
        Label.model_validate_json(as_json({**raw, "source": "Analyst Team"}))
    with pytest.raises(ValidationError, match="Field required"):
        Label.model_validate_json(as_json({k: v for k, v in raw.items() if k != "card_id"}))


def test_alert_ids_are_uuid5_of_the_card_and_transaction_ids() -> None:
    first = alert_id_for("card-1", "tx-1")
    assert first == alert_id_for("card-1", "tx-1")  # a replay gives the same alert id
    assert first == str(uuid.uuid5(ALERT_NAMESPACE, '["card-1", "tx-1"]'))
    assert uuid.UUID(first).version == 5
    assert alert_id_for("card-1", "tx-2") != first
    assert len({alert_id_for("card-1", f"tx-{i}") for i in range(1000)}) == 1000


def test_the_same_transaction_id_on_two_cards_gives_two_alerts() -> None:
    assert alert_id_for("card-1", "tx-1") != alert_id_for("card-2", "tx-1")
    # No separator trick makes two different pairs collide.
    assert alert_id_for("a/b", "c") != alert_id_for("a", "b/c")


def test_dead_letter_keeps_the_original_bytes() -> None:
    value = b"\x00\xff{not json at all\n"
    letter = DeadLetter.of(
        RejectReason.NOT_JSON,
        "not valid JSON",
        value,
        key=b"card-1",
        topic="transactions",
        partition=2,
        offset=41,
    )
    assert letter.value == value
    assert base64.b64decode(letter.value_base64) == value
    assert base64.b64decode(letter.key_base64 or "") == b"card-1"
    assert (letter.source_topic, letter.partition, letter.offset) == ("transactions", 2, 41)
    again = DeadLetter.model_validate_json(letter.model_dump_json())
    assert again == letter
    assert again.value == value
    assert json.loads(letter.model_dump_json())["reason"] == "not_json"


def test_dead_letter_of_a_record_without_value_or_key() -> None:
    letter = DeadLetter.of(RejectReason.INVALID, "empty record (no value)", None)
    assert letter.value == b""
    assert letter.key_base64 is None
    assert letter.source_topic is None and letter.partition is None and letter.offset is None


def test_dead_letter_truncates_long_errors() -> None:
    letter = DeadLetter.of(RejectReason.INVALID, "e" * 5000, b"{}")
    assert len(letter.error) == 2000


def test_a_dead_letter_of_a_huge_record_fits_the_broker_limit() -> None:
    value = b"x" * 1_000_000  # the broker's default limit is 1,048,588 bytes per record
    letter = DeadLetter.of(
        RejectReason.OVERSIZE, "too big", value, key=b"k" * 100_000, topic="t", offset=7
    )
    assert len(letter.model_dump_json()) < 200_000
    assert letter.truncated and letter.value_size == len(value)
    assert letter.value == value[:DEAD_LETTER_VALUE_LIMIT]
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert (letter.source_topic, letter.offset) == ("t", 7)
    small = DeadLetter.of(RejectReason.INVALID, "bad", b"{}")
    assert not small.truncated and small.value == b"{}" and small.value_size == 2


def test_reject_reasons_are_stable_metric_labels() -> None:
    assert {r.value for r in RejectReason} == {
        "oversize",
        "not_json",
        "invalid",
        "future_timestamp",
        "duplicate",
        "unknown_transaction",
        "kafka_error",
        "internal_error",
    }


def _decision(**overrides: Any) -> Decision:
    fields: dict[str, Any] = {
        "transaction_id": "tx-1",
        "card_id": "card-1",
        "terminal_id": "term-1",
        "amount": 42.5,
        "score": 0.7,
        "decision": "review",
        "reasons": ["amount 10.0x this card's 30-day average (4.25)"],
        "model_name": "m",
        "model_version": "1",
        "transaction_time": WHEN,
        "scored_at": WHEN,
    }
    fields.update(overrides)
    return Decision(**fields)


def test_decision_bounds_its_score_and_kind() -> None:
    decision = _decision()
    assert Decision.model_validate_json(decision.model_dump_json()) == decision
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        _decision(score=1.5)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        _decision(score=-0.1)
    with pytest.raises(ValidationError, match="'allow', 'review' or 'block'"):
        _decision(decision="maybe")


def test_alert_is_only_for_review_or_block() -> None:
    fields: dict[str, Any] = {
        "alert_id": alert_id_for("card-1", "tx-1"),
        "transaction": transaction(),
        "score": 0.95,
        "decision": "block",
        "reasons": ["r"],
        "features": {"amount": 42.5},
        "model_name": "m",
        "model_version": "1",
        "created_at": WHEN,
    }
    alert = Alert(**fields)
    assert Alert.model_validate_json(alert.model_dump_json()) == alert
    with pytest.raises(ValidationError, match="'review' or 'block'"):
        Alert(**{**fields, "decision": "allow"})


def test_model_status_round_trips() -> None:
    status = ModelStatus(
        model_name="m",
        model_version="1",
        deciding=True,
        transactions_scored=10,
        decisions={"allow": 9, "review": 1},
        labels_learned={"fraud": 1, "legit": 2},
        labels_by_source={"analyst": 3},
        classifier_weight=0.02,
        quality=ModelQuality(
            window=3,
            frauds=1,
            auc=1.0,
            average_precision=1.0,
            alert_precision=1.0,
            alert_recall=None,
        ),
        threshold_mode="volume",
        review_threshold=0.6,
        block_threshold=0.9,
        review_share=0.01,
        block_share=0.001,
        last_control_id="c-1",
        last_label_at=WHEN,
        emitted_at=WHEN,
    )
    assert ModelStatus.model_validate_json(status.model_dump_json()) == status


def control_json(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "control_id": "c-1",
        "action": "set_thresholds",
        "thresholds": {"mode": "fixed", "review_threshold": 0.5, "block_threshold": 0.8},
        "requested_by": "admin",
        "requested_at": "2024-03-01T12:30:00Z",
    }
    fields.update(overrides)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def test_control_round_trips() -> None:
    control = Control.model_validate_json(control_json())
    assert control.thresholds == ThresholdChange(
        mode="fixed", review_threshold=0.5, block_threshold=0.8
    )
    assert Control.model_validate_json(control.model_dump_json()) == control
    switch = Control.model_validate_json(
        control_json(action="set_deciding_model", thresholds=..., model_name="hybrid-tail-tree")
    )
    assert switch.model_name == "hybrid-tail-tree"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"thresholds": ...}, "set_thresholds needs thresholds"),
        ({"action": "set_deciding_model"}, "set_deciding_model needs model_name"),
        ({"action": "restart"}, "action"),
        ({"thresholds": {"mode": "fixed", "review_threshold": 0.5}}, "needs review_threshold"),
        (
            {"thresholds": {"mode": "fixed", "review_threshold": 0.9, "block_threshold": 0.5}},
            "at least review_threshold",
        ),
        ({"thresholds": {"mode": "volume", "review_share": 0.01}}, "needs review_share"),
        (
            {"thresholds": {"mode": "volume", "review_share": 0.01, "block_share": 0.1}},
            "at most review_share",
        ),
        (
            {"thresholds": {"mode": "volume", "review_share": 1.0, "block_share": 0.1}},
            "less than 1",
        ),
        (
            {"thresholds": {"mode": "fixed", "review_threshold": 1.5, "block_threshold": 2}},
            "less than or equal to 1",
        ),
        ({"requested_at": "2024-03-01T12:30:00"}, "timezone"),
        ({"extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_control_rejects_incomplete_or_impossible_changes(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Control.model_validate_json(control_json(**overrides))
