"""No input stops the detector: the parser and the scoring core under arbitrary input.

Arbitrary bytes and JSON-ish structures go through ``parse_event`` and ``parse_control``,
which must return an event or a reason, never raise. Arbitrary *valid* event sequences
(extreme amounts and times, repeats, labels in any order, control messages) go through
``ScoringCore.process`` in ``test_fuzz_core.py``: it must never raise and must decide
every transaction exactly once, with a finite score in [0, 1] and finite features. The poison corpus
(``tests/poison.py``) goes through both, checked against what each record expects.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.contracts import (
    Alert,
    Control,
    Decision,
    Label,
    RejectReason,
    Transaction,
)
from detector.core import ScoringCore
from detector.items import Rejected, Scored
from detector.settings import ScoringSettings
from detector.validation import parse_control, parse_event
from tests.poison import HEAVY, KINDS, corpus
from tests.poison_records import Expect, PoisonRecord

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HEAVY_FUZZ = settings(FUZZ, max_examples=600)

NOW = datetime.now(UTC)
MAX_BYTES = 65_536
SKEW = timedelta(seconds=300)
TX_FIELDS = tuple(Transaction.model_fields)
LABEL_FIELDS = tuple(Label.model_fields)
CONTROL_FIELDS = tuple(Control.model_fields)


# --- the parser ----------------------------------------------------------------------


def parse_all(value: bytes | None, max_bytes: int = MAX_BYTES) -> list[object]:
    """``value`` read as a transaction, a label and a control message."""
    return [
        parse_event(value, Transaction, max_bytes=max_bytes, max_clock_skew=SKEW, now=NOW),
        parse_event(value, Label, max_bytes=max_bytes, max_clock_skew=SKEW, now=NOW),
        parse_control(value, max_bytes=max_bytes),
    ]


def check_parsed(result: object) -> None:
    """An accepted event is a valid one; a refusal is a reason and a readable error."""
    if isinstance(result, tuple):
        reason, error = result
        assert isinstance(reason, RejectReason)
        assert isinstance(error, str) and error
        return
    assert isinstance(result, Transaction | Label | Control), result
    # What the detector accepted, it can write again and read back unchanged.
    assert type(result).model_validate_json(result.model_dump_json()) == result
    if isinstance(result, Transaction):
        assert math.isfinite(result.amount) and result.amount > 0
        assert result.timestamp.utcoffset() is not None
        assert result.timestamp <= NOW + SKEW
        assert result.transaction_id.strip() == result.transaction_id != ""
    if isinstance(result, Label):
        assert result.labeled_at <= NOW + SKEW


def check_all(value: bytes | None, max_bytes: int = MAX_BYTES) -> list[object]:
    results = parse_all(value, max_bytes)
    for result in results:
        check_parsed(result)
    return results


huge_ints = st.integers(min_value=-(10**400), max_value=10**400)
any_floats = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
odd_texts = st.sampled_from(
    [
        "",
        " ",
        "\u3000",
        "\x00",
        "\ufeff",
        "\u202e",
        "\U0001f4b3",
        "x" * 129,
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "2016-12-31T23:59:60Z",
        "2024-01-01T00:00:00",
        "NaN",
        "1e309",
        "fraud",
        "legit",
        "analyst",
        "set_thresholds",
        "set_deciding_model",
        "hybrid-tail-logreg",
    ]
)
json_scalars = st.none() | st.booleans() | huge_ints | any_floats | st.text(max_size=40) | odd_texts
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10) | odd_texts, children, max_size=5)
    ),
    max_leaves=25,
)


def iso(when: datetime) -> str:
    return when.isoformat()


valid_times = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=NOW.replace(tzinfo=None),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]),
)


def field_values(name: str) -> st.SearchStrategy[Any]:
    """Mostly plausible values of a contract field, sometimes anything at all."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "amount": st.floats(min_value=5e-324, allow_subnormal=True) | huge_ints,
        "timestamp": valid_times.map(iso),
        "labeled_at": valid_times.map(iso),
        "requested_at": valid_times.map(iso),
        "label": st.sampled_from(["fraud", "legit"]),
        "source": st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True),
        "action": st.sampled_from(["set_thresholds", "set_deciding_model"]),
        "thresholds": st.fixed_dictionaries(
            {"mode": st.sampled_from(["volume", "fixed"])},
            optional={
                n: any_floats | json_scalars
                for n in ("review_threshold", "block_threshold", "review_share", "block_share")
            },
        ),
        "currency": st.from_regex(r"[A-Z]{3}", fullmatch=True),
        "country": st.from_regex(r"[A-Z]{2}", fullmatch=True),
        "metadata": st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=34),
    }
    default = st.text(min_size=0, max_size=130)
    return plausible.get(name, default) | json_values


@st.composite
def record_like(draw: st.DrawFn, fields: tuple[str, ...]) -> dict[str, Any]:
    """A record with each field plausible, odd, missing, or extra ones added."""
    record: dict[str, Any] = {}
    for name in fields:
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        record[name] = draw(field_values(name))
    if draw(st.integers(0, 9)) == 0:
        record[draw(st.text(max_size=12))] = draw(json_values)
    return record


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_parsed_or_refused(value: bytes) -> None:
    check_all(value)


@FUZZ
@given(json_values)
def test_arbitrary_json_is_parsed_or_refused(value: Any) -> None:
    check_all(json.dumps(value, allow_nan=True).encode())


@FUZZ
@given(
    st.sampled_from([TX_FIELDS, LABEL_FIELDS, CONTROL_FIELDS]).flatmap(record_like),
    st.sampled_from(["plain", "ascii", "bom", "trailing", "truncated"]),
)
def test_records_close_to_the_contracts_are_parsed_or_refused(
    record: dict[str, Any], encoding: str
) -> None:
    raw = json.dumps(record, allow_nan=True, ensure_ascii=encoding == "ascii").encode()
    if encoding == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif encoding == "trailing":
        raw += b" \x00"
    elif encoding == "truncated":
        raw = raw[: len(raw) // 2]
    check_all(raw)


VALID_TX = json.dumps(
    {
        "transaction_id": "tx-1",
        "timestamp": "2024-01-01T00:00:00Z",
        "card_id": "card-1",
        "terminal_id": "term-1",
        "amount": 12.5,
        "metadata": {"k": "v"},
    }
).encode()


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(VALID_TX)), st.integers(0, 3), st.binary(min_size=1, max_size=8)
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_valid_records_are_parsed_or_refused(
    edits: list[tuple[int, int, bytes]],
) -> None:
    raw = bytearray(VALID_TX)
    for position, removed, inserted in edits:
        at = min(position, len(raw))
        raw[at : at + removed] = inserted
    check_all(bytes(raw))


OPENERS = [b"[", b'{"a":', b'{"amount":', b'{"metadata": {"k":', b"[{}, "]


@FUZZ
@given(st.integers(1, 30_000), st.sampled_from(OPENERS), st.booleans())
def test_deep_nesting_is_refused_without_recursion(depth: int, opener: bytes, closed: bool) -> None:
    closer = b"]" if opener.startswith(b"[") else b"}"
    raw = opener * depth + ((b"1" + closer * depth) if closed else b"")
    # Also past the size limit: the parser itself must bound its recursion.
    for max_bytes in (MAX_BYTES, 10**7):
        for result in check_all(raw, max_bytes):
            assert isinstance(result, tuple)


@pytest.mark.parametrize("depth", [2_000, 100_000])
@pytest.mark.parametrize("opener", OPENERS)
def test_named_depths_are_refused(depth: int, opener: bytes) -> None:
    for max_bytes in (MAX_BYTES, 10**7):
        for result in check_all(opener * depth, max_bytes):
            assert isinstance(result, tuple)


def test_huge_integer_amount_is_refused() -> None:
    """An amount of 10**400 written as an integer is no float: a refusal, not a crash."""
    raw = VALID_TX.replace(b"12.5", b"1" + b"0" * 400)
    result = parse_event(raw, Transaction, max_bytes=MAX_BYTES, max_clock_skew=SKEW, now=NOW)
    assert isinstance(result, tuple) and result[0] is RejectReason.INVALID


def test_empty_and_missing_values_are_refused() -> None:
    for value in (None, b"", b" ", b"\x00"):
        for result in check_all(value):
            assert isinstance(result, tuple)


# --- what the scoring core must give (test_fuzz_core.py runs it on arbitrary streams) -


def check_scored(scored: Scored) -> None:
    parts = scored.parts
    assert math.isfinite(parts.score) and 0.0 <= parts.score <= 1.0, parts
    assert math.isfinite(parts.anomaly), parts
    assert parts.fraud_probability is None or math.isfinite(parts.fraud_probability), parts
    assert math.isfinite(parts.classifier_weight), parts
    assert 0.0 <= scored.score <= 1.0
    bad = {k: v for k, v in scored.features.items() if not math.isfinite(v)}
    assert not bad, f"features not finite: {bad}"
    assert scored.decision in ("allow", "review", "block")
    # What the dataflow publishes can be written and read back.
    decision = scored.to_decision()
    assert Decision.model_validate_json(decision.model_dump_json()) == decision
    alert = scored.to_alert()
    if alert is not None:
        back = Alert.model_validate_json(alert.model_dump_json())
        assert all(math.isfinite(v) for v in back.features.values())


# --- the poison corpus without Kafka ---------------------------------------------------


def outcome_of(core: ScoringCore, record: PoisonRecord) -> tuple[str, RejectReason | None]:
    """What the detector does with ``record``: ("decision", None) or ("dead", reason),
    or ("none", None) for a label or control message with no immediate outcome."""
    if record.topic == "control":
        parsed: object = parse_control(record.value, max_bytes=MAX_BYTES)
    else:
        kind = Label if record.topic == "labels" else Transaction
        parsed = parse_event(record.value, kind, max_bytes=MAX_BYTES, max_clock_skew=SKEW, now=NOW)
    check_parsed(parsed)
    if isinstance(parsed, tuple):
        return "dead", parsed[0]
    assert isinstance(parsed, Transaction | Label | Control)
    out = core.process(parsed)
    scored = [o for o in out if isinstance(o, Scored) and o.transaction is parsed]
    for s in scored:
        check_scored(s)
        assert (s.transaction.card_id, s.transaction.transaction_id) == (
            record.card_id,
            record.transaction_id,
        )
    own = [
        o
        for o in out
        if isinstance(o, Rejected)
        and (
            not isinstance(parsed, Transaction) or o.reason is not RejectReason.UNKNOWN_TRANSACTION
        )
    ]
    assert len(scored) + len(own) <= 1, out
    if scored:
        return "decision", None
    if own:
        return "dead", own[0].reason
    return "none", None


def check_corpus(records: list[PoisonRecord]) -> Counter[str]:
    core = ScoringCore(ScoringSettings(presume_legit_days=14.0))
    outcomes: Counter[str] = Counter()
    for record in records:
        what, reason = outcome_of(core, record)
        outcomes[what] += 1
        where = f"{record.kind}: {record.value[:120] if record.value else record.value!r}"
        if record.expect is Expect.DECISION:
            assert what == "decision", where
        elif record.expect in (Expect.DEAD_LETTER, Expect.DUPLICATE):
            assert what == "dead", where
            assert record.reason is None or reason is record.reason, (where, reason)
        elif record.expect is Expect.EITHER:
            assert what in ("decision", "dead"), where
        else:
            assert what != "decision", where
    return outcomes


def test_poison_corpus_without_kafka() -> None:
    records = corpus(2, run="unit", now=NOW, heavy=False)
    assert len({r.kind for r in records}) >= 30
    outcomes = check_corpus(records)
    assert outcomes["decision"] and outcomes["dead"]


@pytest.mark.slow
def test_heavy_poison_without_kafka() -> None:
    check_corpus(corpus(1, run="heavy", now=NOW, kinds=sorted(HEAVY)))
    assert set(HEAVY) <= set(KINDS)
