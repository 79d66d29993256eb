"""parse_event: raw Kafka values in, a valid event or (reason, readable error) out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from detector.contracts import Label, RejectReason, Transaction
from detector.validation import parse_event

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)
MAX_BYTES = 2048


def tx_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "transaction_id": "tx-1",
        "timestamp": "2024-03-01T11:59:00+00:00",
        "card_id": "card-1",
        "terminal_id": "term-1",
        "amount": 42.5,
    }
    fields.update(overrides)
    return fields


def label_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "transaction_id": "tx-1",
        "card_id": "card-1",
        "label": "fraud",
        "source": "analyst",
        "labeled_at": "2024-03-01T11:30:00Z",
    }
    fields.update(overrides)
    return fields


def parse(
    value: bytes | None, kind: type[Transaction] | type[Label] = Transaction
) -> Transaction | Label | tuple[RejectReason, str]:
    return parse_event(value, kind, max_bytes=MAX_BYTES, max_clock_skew=SKEW, now=NOW)


def reject(
    value: bytes | None, kind: type[Transaction] | type[Label] = Transaction
) -> tuple[RejectReason, str]:
    result = parse(value, kind)
    assert isinstance(result, tuple), f"expected a rejection, got {result!r}"
    reason, error = result
    assert isinstance(reason, RejectReason)
    assert error and len(error) < 1000  # readable: present and short
    return reason, error


def encode(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


def test_valid_transaction_parses() -> None:
    result = parse(encode(tx_fields()))
    assert isinstance(result, Transaction)
    assert result.transaction_id == "tx-1" and result.amount == 42.5


def test_valid_transaction_with_every_optional_field_parses() -> None:
    result = parse(
        encode(
            tx_fields(
                currency="USD",
                merchant_category="grocery",
                country="US",
                channel="pos",
                device_id="dev-1",
                metadata={"k": "v"},
            )
        )
    )
    assert isinstance(result, Transaction)
    assert result.currency == "USD" and result.metadata == {"k": "v"}


def test_valid_label_parses() -> None:
    result = parse(encode(label_fields(label="legit", source="chargeback")), Label)
    assert isinstance(result, Label)
    assert result.label == "legit" and result.source == "chargeback"


def test_a_label_is_not_a_transaction_and_vice_versa() -> None:
    reason, error = reject(encode(label_fields()), Transaction)
    assert reason is RejectReason.INVALID
    assert "Field required" in error and "Extra inputs are not permitted" in error
    reason, error = reject(encode(tx_fields()), Label)
    assert reason is RejectReason.INVALID
    assert "label: Field required" in error


def test_missing_value_is_invalid() -> None:
    assert reject(None) == (RejectReason.INVALID, "empty record (no value)")


@pytest.mark.parametrize("value", [b"", b"   ", b"{not json", b'{"amount": 1', b"\xff\xfe\x00"])
def test_not_json(value: bytes) -> None:
    reason, error = reject(value)
    assert reason is RejectReason.NOT_JSON
    assert error.startswith("not valid JSON: ")


def test_trailing_garbage_after_an_object_is_not_json() -> None:
    reason, error = reject(encode(tx_fields()) + b" trailing")
    assert reason is RejectReason.NOT_JSON
    assert "Extra data" in error


@pytest.mark.parametrize("value", [b"[1, 2]", b'"tx-1"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_invalid(value: bytes) -> None:
    assert reject(value) == (RejectReason.INVALID, "record: Input should be an object")


def test_missing_fields_are_all_named() -> None:
    reason, error = reject(b"{}")
    assert reason is RejectReason.INVALID
    for name in ("transaction_id", "timestamp", "card_id", "terminal_id", "amount"):
        assert f"{name}: Field required" in error


def test_errors_are_capped_at_five() -> None:
    reason, error = reject(encode({f"x{i}": i for i in range(20)}))
    assert reason is RejectReason.INVALID
    assert error.count(";") == 4


def test_extra_field_is_invalid() -> None:
    reason, error = reject(encode(tx_fields(risk_score=0.1)))
    assert (reason, error) == (RejectReason.INVALID, "risk_score: Extra inputs are not permitted")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"amount": "42.5"}, "amount: Input should be a valid number"),
        ({"amount": True}, "amount: Value error, amount must be a number, not a boolean"),
        ({"amount": False}, "amount: Value error, amount must be a number, not a boolean"),
        ({"amount": None}, "amount: Input should be a valid number"),
        ({"amount": 0}, "amount: Input should be greater than 0"),
        ({"amount": 0.0}, "amount: Input should be greater than 0"),
        ({"amount": -12.5}, "amount: Input should be greater than 0"),
        ({"card_id": 123}, "card_id: Input should be a valid string"),
        ({"terminal_id": 7.5}, "terminal_id: Input should be a valid string"),
        ({"transaction_id": 99}, "transaction_id: Input should be a valid string"),
        ({"transaction_id": "   "}, "transaction_id: String should have at least 1 character"),
        ({"timestamp": "2024-03-01T11:59:00"}, "timestamp: Input should have timezone info"),
        ({"timestamp": 1709294340}, "timestamp: Input should be a valid datetime"),
    ],
)
def test_wrong_types_and_values_are_invalid(overrides: dict[str, Any], expected: str) -> None:
    assert reject(encode(tx_fields(**overrides))) == (RejectReason.INVALID, expected)


@pytest.mark.parametrize("timestamp", ["yesterday", "2024-13-01T10:00:00Z", "2024-03-01 noon"])
def test_unparseable_timestamp_is_invalid(timestamp: str) -> None:
    reason, error = reject(encode(tx_fields(timestamp=timestamp)))
    assert reason is RejectReason.INVALID
    assert error.startswith("timestamp: Input should be a valid datetime")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_amount_is_invalid(literal: bytes) -> None:
    value = encode(tx_fields(amount=0.25)).replace(b"0.25", literal)
    assert literal in value
    assert reject(value) == (RejectReason.INVALID, "amount: Input should be a finite number")


def test_future_timestamp_beyond_the_clock_skew_is_rejected() -> None:
    late = (NOW + SKEW + timedelta(seconds=1)).isoformat()
    reason, error = reject(encode(tx_fields(timestamp=late)))
    assert reason is RejectReason.FUTURE_TIMESTAMP
    assert late in error and "0:05:00" in error


def test_future_timestamp_within_the_clock_skew_is_accepted() -> None:
    edge = (NOW + SKEW).isoformat()
    assert isinstance(parse(encode(tx_fields(timestamp=edge))), Transaction)
    # An offset other than UTC is compared as the same instant.
    local = (NOW + SKEW + timedelta(hours=2)).isoformat().replace("+00:00", "+02:00")
    assert isinstance(parse(encode(tx_fields(timestamp=local))), Transaction)


def test_future_label_is_rejected() -> None:
    reason, _ = reject(encode(label_fields(labeled_at="2024-03-02T00:00:00Z")), Label)
    assert reason is RejectReason.FUTURE_TIMESTAMP


def test_clock_defaults_to_now() -> None:
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    result = parse_event(
        encode(tx_fields(timestamp=soon)), Transaction, max_bytes=MAX_BYTES, max_clock_skew=SKEW
    )
    assert isinstance(result, tuple) and result[0] is RejectReason.FUTURE_TIMESTAMP
    past = parse_event(encode(tx_fields()), Transaction, max_bytes=MAX_BYTES, max_clock_skew=SKEW)
    assert isinstance(past, Transaction)


def test_oversize_record_is_rejected_before_parsing() -> None:
    padded = encode(tx_fields(metadata={"note": "x" * 250})) + b" " * MAX_BYTES
    reason, error = reject(padded)
    assert reason is RejectReason.OVERSIZE
    assert error == f"record of {len(padded)} bytes exceeds {MAX_BYTES} bytes"
    # Garbage that is too large is oversize, not "not JSON".
    assert reject(b"\x00" * (MAX_BYTES + 1))[0] is RejectReason.OVERSIZE


def test_record_of_exactly_max_bytes_is_accepted() -> None:
    value = encode(tx_fields())
    value += b" " * (MAX_BYTES - len(value))
    assert len(value) == MAX_BYTES
    assert isinstance(parse(value), Transaction)


def test_invalid_label_fields() -> None:
    reason, error = reject(encode(label_fields(label="chargeback", source="Bank")), Label)
    assert reason is RejectReason.INVALID
    assert "label: Input should be 'fraud' or 'legit'" in error
    assert "source: String should match pattern" in error
