"""A corpus of hostile records for the detector's input topics, each of a named kind.

Every kind is a small function that makes one or a few records (a few kinds are
sequences: a subnormal amount then a normal one on the same new card, a label before its
transaction, a transaction twice). Each record says what the detector must do with it:

- ``DECISION``: a valid transaction: exactly one decision, under the ids it names;
- ``DEAD_LETTER``: exactly one dead letter, with ``reason`` when the reason is certain;
- ``EITHER``: one outcome, a decision or a dead letter (the contract leaves it open, as
  for a UTF-8 byte order mark or a leap second);
- ``DUPLICATE``: a valid transaction already decided: one dead letter (``duplicate``);
- ``QUIET``: a valid label or control message: no decision, at most one dead letter
  (a label may wait for its transaction, or be dead-lettered when it never comes).

``corpus`` makes rounds of every kind with fresh ids, the heavy kinds (records of
hundreds of kilobytes, 100,000 levels of nesting, a card at thousands of terminals) in
the first round only. The records are plain bytes: the tests produce them with any
Kafka client, or feed them to ``detector.validation`` directly.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from detector.contracts import RejectReason

TRANSACTIONS = "transactions"
LABELS = "labels"
CONTROL = "control"
TOPICS = (TRANSACTIONS, LABELS, CONTROL)

# The broker's default largest record (message.max.bytes) is 1,048,588 bytes; the
# producer's (librdkafka) default is 1,000,000 bytes.
BROKER_MAX_BYTES = 1_048_588
DEFAULT_MAX_MESSAGE_BYTES = 65_536
NESTING_SHALLOW = 2_000
NESTING_DEEP = 100_000


class Expect(StrEnum):
    """What the detector must do with a record."""

    DECISION = "decision"
    DEAD_LETTER = "dead_letter"
    EITHER = "either"
    DUPLICATE = "duplicate"
    QUIET = "quiet"


@dataclass(frozen=True, slots=True)
class PoisonRecord:
    """One record to produce, and what must come of it."""

    kind: str
    topic: str  # TRANSACTIONS, LABELS or CONTROL (logical names; map to real topics)
    value: bytes | None
    expect: Expect
    key: bytes | None = None
    reason: RejectReason | None = None  # the dead letter's reason, when it is certain
    # The ids a decision (or a dead letter of the core, which has no offset to go by)
    # carries: (card_id, transaction_id) for transactions and labels, control_id alone.
    card_id: str | None = None
    transaction_id: str | None = None
    control_id: str | None = None

    @property
    def identity(self) -> tuple[str, ...] | None:
        """Who the record is about, as decisions and dead letters of the core tell it."""
        if self.control_id is not None:
            return (CONTROL, self.control_id)
        if self.card_id is not None and self.transaction_id is not None:
            return (self.topic, self.card_id, self.transaction_id)
        return None

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"")


@dataclass
class Context:
    """Fresh ids and a clock for one corpus."""

    run: str
    now: datetime
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    fanout: int = 5  # transactions of the many-terminals and same-timestamp kinds
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def uid(self, what: str) -> str:
        return f"{self.run}-{what}-{next(self._ids)}"

    def recent(self, seconds_ago: float = 3600.0) -> datetime:
        """A timestamp safely in the past (the detector rejects the future)."""
        return self.now - timedelta(seconds=seconds_ago + self.rng.uniform(0, 60))


Kind = Callable[[Context], list[PoisonRecord]]
KINDS: dict[str, Kind] = {}
HEAVY: set[str] = set()  # kinds made once per corpus (large records, many records)


def kind(name: str, *, heavy: bool = False) -> Callable[[Kind], Kind]:
    def register(make: Kind) -> Kind:
        if name in KINDS:
            raise ValueError(f"poison kind {name!r} defined twice")
        KINDS[name] = make
        if heavy:
            HEAVY.add(name)
        return make

    return register


# --- building blocks -------------------------------------------------------------------


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dump(value: Any) -> bytes:
    """JSON as a careless producer writes it: NaN and Infinity allowed, UTF-8, no ASCII."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode()


def tx_fields(ctx: Context, **overrides: Any) -> dict[str, Any]:
    """A valid transaction's fields on a new card; ``...`` as a value drops the field."""
    base: dict[str, Any] = {
        "transaction_id": ctx.uid("tx"),
        "timestamp": iso(ctx.recent()),
        "card_id": ctx.uid("card"),
        "terminal_id": ctx.uid("term"),
        "amount": 42.5,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def label_fields(
    ctx: Context, card_id: str, transaction_id: str, /, **overrides: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "transaction_id": transaction_id,
        "card_id": card_id,
        "label": "fraud",
        "source": "analyst",
        "labeled_at": iso(ctx.recent(60)),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def control_fields(ctx: Context, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "control_id": ctx.uid("control"),
        "action": "set_thresholds",
        "thresholds": {"mode": "volume", "review_share": 0.01, "block_share": 0.001},
        "requested_by": "poison",
        "requested_at": iso(ctx.now),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def valid_tx(name: str, fields: dict[str, Any], value: bytes | None = None) -> PoisonRecord:
    """A transaction the detector must decide (ids as the contract strips them)."""
    card = str(fields["card_id"]).strip()
    return PoisonRecord(
        name,
        TRANSACTIONS,
        dump(fields) if value is None else value,
        Expect.DECISION,
        key=card.encode(),
        card_id=card,
        transaction_id=str(fields["transaction_id"]).strip(),
    )


def either_tx(name: str, fields: dict[str, Any], value: bytes) -> PoisonRecord:
    card = str(fields["card_id"]).strip()
    return PoisonRecord(
        name,
        TRANSACTIONS,
        value,
        Expect.EITHER,
        key=card.encode(),
        card_id=card,
        transaction_id=str(fields["transaction_id"]).strip(),
    )


def dead(
    name: str,
    value: bytes | None,
    reason: RejectReason | None = None,
    *,
    topic: str = TRANSACTIONS,
    key: bytes | None = None,
) -> PoisonRecord:
    return PoisonRecord(name, topic, value, Expect.DEAD_LETTER, key=key, reason=reason)


def replace_value(raw: bytes, name: str, literal: bytes) -> bytes:
    """``raw`` (a JSON object) with field ``name``'s value written as ``literal``."""
    obj = json.loads(raw)
    marker = "__poison_marker__"
    obj[name] = marker
    return dump(obj).replace(f'"{marker}"'.encode(), literal)


def padded(fields: dict[str, Any], size: int) -> bytes:
    """The JSON of ``fields`` padded with insignificant whitespace to exactly ``size``."""
    raw = dump(fields)
    if len(raw) > size:
        raise ValueError(f"record of {len(raw)} bytes cannot be padded to {size}")
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


# --- bytes that are not a transaction ------------------------------------------------


@kind("empty_value")
def _empty_value(ctx: Context) -> list[PoisonRecord]:
    return [dead("empty_value", b"", RejectReason.NOT_JSON)]


@kind("none_value")
def _none_value(ctx: Context) -> list[PoisonRecord]:
    # A tombstone: a record with a key and no value.
    return [dead("none_value", None, RejectReason.INVALID, key=b"tombstone")]


@kind("not_utf8")
def _not_utf8(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx, card_id="caf\u00e9")
    raw = json.dumps(fields, ensure_ascii=False).encode("latin-1")
    return [dead("not_utf8", raw, RejectReason.NOT_JSON)]


@kind("random_bytes")
def _random_bytes(ctx: Context) -> list[PoisonRecord]:
    return [dead("random_bytes", b"{" + ctx.rng.randbytes(200), RejectReason.NOT_JSON)]


@kind("utf8_bom")
def _utf8_bom(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx)
    return [either_tx("utf8_bom", fields, b"\xef\xbb\xbf" + dump(fields))]


@kind("nul_bytes_raw")
def _nul_bytes_raw(ctx: Context) -> list[PoisonRecord]:
    raw = dump(tx_fields(ctx))
    return [dead("nul_bytes_raw", raw[:10] + b"\x00\x00" + raw[10:], RejectReason.NOT_JSON)]


@kind("nul_in_ids")
def _nul_in_ids(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx)
    fields["transaction_id"] += "\x00nul"
    fields["card_id"] += "\x00"  # json escapes it as \u0000: valid JSON, a valid string
    return [either_tx("nul_in_ids", fields, dump(fields))]


@kind("trailing_garbage")
def _trailing_garbage(ctx: Context) -> list[PoisonRecord]:
    return [dead("trailing_garbage", dump(tx_fields(ctx)) + b"xyz", RejectReason.NOT_JSON)]


@kind("two_objects")
def _two_objects(ctx: Context) -> list[PoisonRecord]:
    raw = dump(tx_fields(ctx))
    return [dead("two_objects", raw + b"\n" + raw, RejectReason.NOT_JSON)]


@kind("json_with_comment")
def _json_with_comment(ctx: Context) -> list[PoisonRecord]:
    raw = dump(tx_fields(ctx))
    return [dead("json_with_comment", b"/* hi */" + raw, RejectReason.NOT_JSON)]


@kind("single_quotes")
def _single_quotes(ctx: Context) -> list[PoisonRecord]:
    raw = dump(tx_fields(ctx)).replace(b'"', b"'")
    return [dead("single_quotes", raw, RejectReason.NOT_JSON)]


@kind("truncated")
def _truncated(ctx: Context) -> list[PoisonRecord]:
    raw = dump(tx_fields(ctx))
    return [dead("truncated", raw[: len(raw) // 2], RejectReason.NOT_JSON)]


@kind("lone_surrogate_id")
def _lone_surrogate(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx, card_id="SURROGATE")
    raw = dump(fields).replace(b"SURROGATE", b"\\ud800")
    return [dead("lone_surrogate_id", raw)]


for _depth, _heavy in ((NESTING_SHALLOW, False), (NESTING_DEEP, True)):

    def _arrays(ctx: Context, depth: int = _depth) -> list[PoisonRecord]:
        return [dead(f"nested_arrays_{depth}", b"[" * depth + b"]" * depth)]

    def _objects(ctx: Context, depth: int = _depth) -> list[PoisonRecord]:
        return [dead(f"nested_objects_{depth}", b'{"a":' * depth + b"1" + b"}" * depth)]

    def _unclosed(ctx: Context, depth: int = _depth) -> list[PoisonRecord]:
        return [dead(f"nested_unclosed_{depth}", b"[" * depth)]

    kind(f"nested_arrays_{_depth}", heavy=_heavy)(_arrays)
    kind(f"nested_objects_{_depth}", heavy=_heavy)(_objects)
    kind(f"nested_unclosed_{_depth}", heavy=_heavy)(_unclosed)


@kind("nested_in_metadata_2000")
def _nested_in_metadata(ctx: Context) -> list[PoisonRecord]:
    raw = replace_value(
        dump(tx_fields(ctx)), "metadata", b'{"k": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    )
    return [dead("nested_in_metadata_2000", raw)]


@kind("nested_in_amount_2000")
def _nested_in_amount(ctx: Context) -> list[PoisonRecord]:
    raw = replace_value(dump(tx_fields(ctx)), "amount", b"[" * 2000 + b"]" * 2000)
    return [dead("nested_in_amount_2000", raw)]


@kind("top_level_values")
def _top_level(ctx: Context) -> list[PoisonRecord]:
    values = [b"[]", b"[1, 2, 3]", b'"a string"', b"42", b"-0", b"null", b"true", b"{}", b"1e999"]
    return [dead("top_level_values", v) for v in values]


@kind("key_not_utf8")
def _key_not_utf8(ctx: Context) -> list[PoisonRecord]:
    return [dead("key_not_utf8", b"{", RejectReason.NOT_JSON, key=b"\xff\xfe\xfa")]


@kind("key_large")
def _key_large(ctx: Context) -> list[PoisonRecord]:
    return [dead("key_large", b"nope", RejectReason.NOT_JSON, key=b"k" * 20_000)]


# --- amounts --------------------------------------------------------------------------

BAD_AMOUNTS: dict[str, bytes] = {
    "amount_1e309": b"1e309",
    "amount_minus_1e309": b"-1e309",
    "amount_nan": b"NaN",
    "amount_infinity": b"Infinity",
    "amount_minus_infinity": b"-Infinity",
    "amount_minus_zero": b"-0",
    "amount_minus_zero_float": b"-0.0",
    "amount_zero": b"0",
    "amount_negative": b"-12.5",
    "amount_underflow_1e-400": b"1e-400",
    "amount_huge_integer": b"1" + b"0" * 400,
    "amount_huge_negative_integer": b"-1" + b"0" * 400,
    "amount_string": b'"12.5"',
    "amount_true": b"true",
    "amount_false": b"false",
    "amount_null": b"null",
    "amount_array": b"[12.5]",
    "amount_object": b'{"value": 12.5}',
    "amount_hex": b"0x10",
    "amount_leading_plus": b"+12.5",
    "amount_leading_zeros": b"0012.5",
}


def _bad_amount(name: str, literal: bytes) -> Kind:
    def make(ctx: Context) -> list[PoisonRecord]:
        return [dead(name, replace_value(dump(tx_fields(ctx)), "amount", literal))]

    return make


for _name, _literal in BAD_AMOUNTS.items():
    kind(_name)(_bad_amount(_name, _literal))


def _then_normal(name: str, first: float) -> Kind:
    """``first`` then 12.5 a second later on the same new card (both valid)."""

    def make(ctx: Context) -> list[PoisonRecord]:
        card, when = ctx.uid("card"), ctx.recent()
        a = tx_fields(ctx, card_id=card, amount=first, timestamp=iso(when))
        b = tx_fields(ctx, card_id=card, amount=12.5, timestamp=iso(when + timedelta(seconds=1)))
        return [valid_tx(name, a), valid_tx(name, b)]

    return make


kind("amount_subnormal_then_normal")(_then_normal("amount_subnormal_then_normal", 5e-324))
kind("amount_max_float_then_normal")(
    _then_normal("amount_max_float_then_normal", 1.7976931348623157e308)
)
kind("amount_min_normal_then_normal")(
    _then_normal("amount_min_normal_then_normal", 2.2250738585072014e-308)
)


@kind("amount_normal_then_max_float")
def _normal_then_max(ctx: Context) -> list[PoisonRecord]:
    card, when = ctx.uid("card"), ctx.recent()
    a = tx_fields(ctx, card_id=card, amount=12.5, timestamp=iso(when))
    b = tx_fields(ctx, card_id=card, amount=1.7976931348623157e308, timestamp=iso(when))
    return [valid_tx("amount_normal_then_max_float", r) for r in (a, b)]


@kind("amount_valid_extremes")
def _amount_extremes(ctx: Context) -> list[PoisonRecord]:
    amounts = [0.01, 1e-300, 5e-324, 1e15, 1.7976931348623157e308, 123456789.123456789]
    return [valid_tx("amount_valid_extremes", tx_fields(ctx, amount=a)) for a in amounts]


@kind("amount_integer_literal")
def _amount_integer(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx, amount=17)
    return [valid_tx("amount_integer_literal", fields)]


@kind("amount_exponent_literal")
def _amount_exponent(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx)
    return [
        valid_tx("amount_exponent_literal", fields, replace_value(dump(fields), "amount", b"1E2"))
    ]


# --- wrong, missing and extra fields ----------------------------------------------------

WRONG_TYPES: dict[str, Any] = {
    "transaction_id": 123,
    "timestamp": 1_700_000_000,
    "card_id": ["card"],
    "terminal_id": {"id": "t"},
    "amount": "12.5",
    "currency": 840,
    "merchant_category": True,
    "country": ["FR"],
    "channel": 1.5,
    "device_id": {},
    "metadata": ["a", "b"],
}
REQUIRED = ("transaction_id", "timestamp", "card_id", "terminal_id", "amount")


def _wrong_type(name: str, field_name: str, value: Any) -> Kind:
    def make(ctx: Context) -> list[PoisonRecord]:
        return [dead(name, dump(tx_fields(ctx, **{field_name: value})), RejectReason.INVALID)]

    return make


def _missing(name: str, field_name: str) -> Kind:
    def make(ctx: Context) -> list[PoisonRecord]:
        return [dead(name, dump(tx_fields(ctx, **{field_name: ...})), RejectReason.INVALID)]

    return make


for _field, _value in WRONG_TYPES.items():
    kind(f"wrong_type_{_field}")(_wrong_type(f"wrong_type_{_field}", _field, _value))
for _field in REQUIRED:
    kind(f"missing_{_field}")(_missing(f"missing_{_field}", _field))
    kind(f"null_{_field}")(_wrong_type(f"null_{_field}", _field, None))


@kind("extra_field")
def _extra_field(ctx: Context) -> list[PoisonRecord]:
    return [dead("extra_field", dump(tx_fields(ctx, cvv="123")), RejectReason.INVALID)]


@kind("bad_codes")
def _bad_codes(ctx: Context) -> list[PoisonRecord]:
    bad = [
        {"currency": "usd"},
        {"currency": "EURO"},
        {"country": "FRA"},
        {"country": "fr"},
        {"merchant_category": "m" * 65},
        {"merchant_category": ""},
        {"channel": "c" * 65},
        {"device_id": " "},
    ]
    return [dead("bad_codes", dump(tx_fields(ctx, **b)), RejectReason.INVALID) for b in bad]


@kind("all_optional_fields")
def _all_optional(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(
        ctx,
        currency="EUR",
        merchant_category="5411",
        country="FR",
        channel="ecom",
        device_id="d" * 128,
        metadata={"k": "v"},
    )
    return [valid_tx("all_optional_fields", fields)]


@kind("duplicate_json_keys")
def _duplicate_keys(ctx: Context) -> list[PoisonRecord]:
    out = []
    for first, last in ((b"12.5", b'"x"'), (b'"x"', b"12.5")):
        fields = tx_fields(ctx)
        raw = replace_value(dump(fields), "amount", first + b', "amount": ' + last)
        out.append(either_tx("duplicate_json_keys", fields, raw))
    return out


@kind("escaped_key_names")
def _escaped_keys(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx)
    raw = dump(fields).replace(b'"amount"', b'"\\u0061mount"')
    return [valid_tx("escaped_key_names", fields, raw)]


# --- identifiers ------------------------------------------------------------------------


@kind("id_128_chars")
def _id_128(ctx: Context) -> list[PoisonRecord]:
    prefix = ctx.uid("long") + "-"
    fields = tx_fields(ctx, transaction_id=prefix + "x" * (128 - len(prefix)))
    return [valid_tx("id_128_chars", fields)]


@kind("id_129_chars")
def _id_129(ctx: Context) -> list[PoisonRecord]:
    out = []
    for name in ("transaction_id", "card_id", "terminal_id"):
        prefix = ctx.uid("long") + "-"
        fields = tx_fields(ctx, **{name: prefix + "x" * (129 - len(prefix))})
        out.append(dead("id_129_chars", dump(fields), RejectReason.INVALID))
    return out


@kind("id_whitespace_only")
def _id_whitespace(ctx: Context) -> list[PoisonRecord]:
    out = []
    for name in ("transaction_id", "card_id", "terminal_id"):
        for blank in (" ", "\t\n  ", "\u3000\u2003"):
            fields = tx_fields(ctx, **{name: blank})
            out.append(dead("id_whitespace_only", dump(fields), RejectReason.INVALID))
    return out


@kind("id_empty")
def _id_empty(ctx: Context) -> list[PoisonRecord]:
    return [dead("id_empty", dump(tx_fields(ctx, card_id="")), RejectReason.INVALID)]


@kind("id_padded_with_whitespace")
def _id_padded(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx)
    fields["transaction_id"] = "  " + fields["transaction_id"] + "\t"
    fields["card_id"] = " " + fields["card_id"] + " "
    return [valid_tx("id_padded_with_whitespace", fields)]


UNICODE_IDS: dict[str, str] = {
    "id_homoglyph": "\u0441\u0430rd",  # Cyrillic es and a, then Latin "rd"
    "id_rtl_override": "\u202ecard\u202c",
    "id_emoji": "\U0001f4b3\U0001f525\U0001f9d1\u200d\U0001f4bb",
    "id_zero_width": "ca\u200brd\ufeff",
    "id_combining": "e\u0301\u0301\u0301",
    "id_control_chars": "card\x07\x1b[31m",
}


def _unicode_id(name: str, text: str) -> Kind:
    def make(ctx: Context) -> list[PoisonRecord]:
        suffix = ctx.uid("u")
        fields = tx_fields(ctx, transaction_id=text + suffix, card_id=text + suffix)
        return [valid_tx(name, fields)]

    return make


for _name, _text in UNICODE_IDS.items():
    kind(_name)(_unicode_id(_name, _text))


@kind("id_128_emoji")
def _id_128_emoji(ctx: Context) -> list[PoisonRecord]:
    # 128 characters, 512 bytes of UTF-8: the limit counts characters.
    suffix = ctx.uid("e")
    fields = tx_fields(ctx, card_id=suffix + "\U0001f4b3" * (128 - len(suffix)))
    return [valid_tx("id_128_emoji", fields)]


# --- timestamps -------------------------------------------------------------------------


@kind("timestamp_no_offset")
def _ts_no_offset(ctx: Context) -> list[PoisonRecord]:
    naive = ctx.recent().replace(tzinfo=None).isoformat()
    return [
        dead("timestamp_no_offset", dump(tx_fields(ctx, timestamp=naive)), RejectReason.INVALID)
    ]


@kind("timestamp_unparseable")
def _ts_bad(ctx: Context) -> list[PoisonRecord]:
    texts = [
        "2024-01-01",
        "2024-02-30T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:00:00+24:00",
        " 2024-01-01T00:00:00Z",
        "yesterday",
        "",
        "+275760-09-13T00:00:00Z",
    ]
    return [
        dead("timestamp_unparseable", dump(tx_fields(ctx, timestamp=t)), RejectReason.INVALID)
        for t in texts
    ]


@kind("timestamp_year_0001")
def _ts_year_1(ctx: Context) -> list[PoisonRecord]:
    card = ctx.uid("card")
    first = tx_fields(ctx, card_id=card, timestamp="0001-01-01T00:00:00Z")
    then = tx_fields(ctx, card_id=card, timestamp=iso(ctx.recent()))
    return [valid_tx("timestamp_year_0001", first), valid_tx("timestamp_year_0001", then)]


@kind("timestamp_year_0001_plus_14h")
def _ts_year_1_east(ctx: Context) -> list[PoisonRecord]:
    # In UTC this instant is in year 0, which Python's datetime cannot hold.
    fields = tx_fields(ctx, timestamp="0001-01-01T00:00:00+14:00")
    return [either_tx("timestamp_year_0001_plus_14h", fields, dump(fields))]


@kind("timestamp_far_future")
def _ts_future(ctx: Context) -> list[PoisonRecord]:
    texts = [
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        iso(ctx.now + timedelta(days=1)),
    ]
    return [
        dead(
            "timestamp_far_future",
            dump(tx_fields(ctx, timestamp=t)),
            RejectReason.FUTURE_TIMESTAMP,
        )
        for t in texts
    ]


@kind("timestamp_leap_second")
def _ts_leap(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx, timestamp="2016-12-31T23:59:60Z")
    return [either_tx("timestamp_leap_second", fields, dump(fields))]


@kind("timestamp_nanoseconds")
def _ts_nanos(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx)
    fields["timestamp"] = iso(ctx.recent().replace(microsecond=0)).replace("Z", ".123456789Z")
    return [valid_tx("timestamp_nanoseconds", fields)]


@kind("timestamp_odd_offsets")
def _ts_offsets(ctx: Context) -> list[PoisonRecord]:
    when = ctx.recent()
    texts = [
        when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+23:59"),
        when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S-23:59"),
        when.astimezone(UTC).strftime("%Y-%m-%dt%H:%M:%Sz"),
    ]
    out = []
    for text in texts:
        fields = tx_fields(ctx, timestamp=text)
        # +23:59 on a recent wall time is a day earlier; -23:59 may be in the future.
        out.append(either_tx("timestamp_odd_offsets", fields, dump(fields)))
    return out


@kind("timestamps_out_of_order")
def _ts_out_of_order(ctx: Context) -> list[PoisonRecord]:
    card, term = ctx.uid("card"), ctx.uid("term")
    base = ctx.recent(7200)
    offsets = [0, -86400 * 20, 3600, -1, -86400 * 400, 5]
    return [
        valid_tx(
            "timestamps_out_of_order",
            tx_fields(
                ctx, card_id=card, terminal_id=term, timestamp=iso(base + timedelta(seconds=s))
            ),
        )
        for s in offsets
    ]


# --- metadata ---------------------------------------------------------------------------


@kind("metadata_limits_valid")
def _metadata_ok(ctx: Context) -> list[PoisonRecord]:
    return [
        valid_tx("metadata_limits_valid", tx_fields(ctx, metadata={"k": "v" * 256})),
        valid_tx(
            "metadata_limits_valid", tx_fields(ctx, metadata={f"k{i}": "v" for i in range(32)})
        ),
        valid_tx("metadata_limits_valid", tx_fields(ctx, metadata={"k" * 64: ""})),
        valid_tx("metadata_limits_valid", tx_fields(ctx, metadata={})),
    ]


@kind("metadata_limits_exceeded")
def _metadata_bad(ctx: Context) -> list[PoisonRecord]:
    bad: list[Any] = [
        {"k": "v" * 257},
        {f"k{i}": "v" for i in range(33)},
        {"k" * 65: "v"},
        {"": "v"},
        {"k": 1},
        {"k": None},
        {"k": {"nested": "v"}},
        "not a map",
    ]
    return [
        dead("metadata_limits_exceeded", dump(tx_fields(ctx, metadata=m)), RejectReason.INVALID)
        for m in bad
    ]


@kind("metadata_very_long")
def _metadata_long(ctx: Context) -> list[PoisonRecord]:
    # 32 entries of 256 characters, each a 4-byte emoji: 32 KiB of metadata, valid.
    meta = {f"k{i}": "\U0001f4b3" * 256 for i in range(32)}
    return [valid_tx("metadata_very_long", tx_fields(ctx, metadata=meta))]


# --- sizes ----------------------------------------------------------------------------


@kind("size_at_limit")
def _size_at_limit(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx)
    return [valid_tx("size_at_limit", fields, padded(fields, ctx.max_message_bytes))]


@kind("size_over_limit")
def _size_over_limit(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx)
    raw = padded(fields, ctx.max_message_bytes + 1)
    return [dead("size_over_limit", raw, RejectReason.OVERSIZE, key=fields["card_id"].encode())]


def _large(name: str, size: int) -> Kind:
    def make(ctx: Context) -> list[PoisonRecord]:
        fields = tx_fields(ctx)
        return [dead(name, padded(fields, size), RejectReason.OVERSIZE)]

    return make


# Past ~786 KB a record's base64 copy alone is larger than the broker accepts.
kind("size_790kb", heavy=True)(_large("size_790kb", 790_000))
kind("size_900kb", heavy=True)(_large("size_900kb", 900_000))


@kind("size_900kb_garbage", heavy=True)
def _large_garbage(ctx: Context) -> list[PoisonRecord]:
    return [dead("size_900kb_garbage", bytes(900_000), RejectReason.OVERSIZE, key=b"\x00" * 1000)]


# --- repeats ----------------------------------------------------------------------------


@kind("duplicate_transaction")
def _duplicate(ctx: Context) -> list[PoisonRecord]:
    fields = tx_fields(ctx)
    first = valid_tx("duplicate_transaction", fields)
    again = PoisonRecord(
        "duplicate_transaction",
        TRANSACTIONS,
        first.value,
        Expect.DUPLICATE,
        key=first.key,
        reason=RejectReason.DUPLICATE,
        card_id=first.card_id,
        transaction_id=first.transaction_id,
    )
    changed = tx_fields(ctx, **{**fields, "amount": 9999.0})
    third = PoisonRecord(
        "duplicate_transaction",
        TRANSACTIONS,
        dump(changed),
        Expect.DUPLICATE,
        key=first.key,
        reason=RejectReason.DUPLICATE,
        card_id=first.card_id,
        transaction_id=first.transaction_id,
    )
    return [first, again, third]


@kind("same_id_two_cards")
def _same_id_two_cards(ctx: Context) -> list[PoisonRecord]:
    tx_id = ctx.uid("shared")
    return [
        valid_tx("same_id_two_cards", tx_fields(ctx, transaction_id=tx_id)),
        valid_tx("same_id_two_cards", tx_fields(ctx, transaction_id=tx_id)),
    ]


@kind("same_card_many_terminals")
def _many_terminals(ctx: Context) -> list[PoisonRecord]:
    card, when = ctx.uid("card"), ctx.recent()
    return [
        valid_tx(
            "same_card_many_terminals",
            tx_fields(ctx, card_id=card, timestamp=iso(when + timedelta(milliseconds=i))),
        )
        for i in range(ctx.fanout)
    ]


@kind("same_card_many_terminals_heavy", heavy=True)
def _many_terminals_heavy(ctx: Context) -> list[PoisonRecord]:
    card, when = ctx.uid("card"), ctx.recent()
    return [
        valid_tx(
            "same_card_many_terminals_heavy",
            tx_fields(ctx, card_id=card, timestamp=iso(when + timedelta(milliseconds=i))),
        )
        for i in range(max(ctx.fanout, 2000))
    ]


@kind("same_timestamp_repeated")
def _same_timestamp(ctx: Context) -> list[PoisonRecord]:
    card, term, when = ctx.uid("card"), ctx.uid("term"), iso(ctx.recent())
    return [
        valid_tx(
            "same_timestamp_repeated",
            tx_fields(ctx, card_id=card, terminal_id=term, timestamp=when, amount=a),
        )
        for a in (10.0, 10.0, 5e-324, 1e15, 10.0)[: max(2, ctx.fanout)]
    ]


# --- labels ---------------------------------------------------------------------------


def _label(name: str, fields: dict[str, Any], expect: Expect = Expect.QUIET) -> PoisonRecord:
    card = str(fields.get("card_id", "")).strip() or None
    tx_id = str(fields.get("transaction_id", "")).strip() or None
    return PoisonRecord(
        name,
        LABELS,
        dump(fields),
        expect,
        key=card.encode() if card else None,
        card_id=card,
        transaction_id=tx_id,
    )


@kind("label_unknown_transaction")
def _label_unknown_tx(ctx: Context) -> list[PoisonRecord]:
    tx = tx_fields(ctx, timestamp=iso(ctx.recent(7200)))
    label = label_fields(ctx, tx["card_id"], ctx.uid("nosuch"))
    return [valid_tx("label_unknown_transaction", tx), _label("label_unknown_transaction", label)]


@kind("label_unknown_card")
def _label_unknown_card(ctx: Context) -> list[PoisonRecord]:
    return [_label("label_unknown_card", label_fields(ctx, ctx.uid("card"), ctx.uid("tx")))]


@kind("label_before_transaction")
def _label_before(ctx: Context) -> list[PoisonRecord]:
    tx = tx_fields(ctx, timestamp=iso(ctx.recent(7200)))
    label = label_fields(ctx, tx["card_id"], tx["transaction_id"], label="legit")
    return [_label("label_before_transaction", label), valid_tx("label_before_transaction", tx)]


@kind("label_after_transaction_twice")
def _label_twice(ctx: Context) -> list[PoisonRecord]:
    tx = tx_fields(ctx, timestamp=iso(ctx.recent(7200)))
    label = label_fields(ctx, tx["card_id"], tx["transaction_id"])
    return [
        valid_tx("label_after_transaction_twice", tx),
        _label("label_after_transaction_twice", label),
        _label("label_after_transaction_twice", {**label, "label": "legit"}),
    ]


@kind("label_extreme_times")
def _label_times(ctx: Context) -> list[PoisonRecord]:
    tx = tx_fields(ctx, timestamp="0001-01-01T00:00:00Z")
    early = label_fields(
        ctx, tx["card_id"], tx["transaction_id"], labeled_at="0001-01-01T00:00:00Z"
    )
    return [valid_tx("label_extreme_times", tx), _label("label_extreme_times", early)]


@kind("label_invalid")
def _label_invalid(ctx: Context) -> list[PoisonRecord]:
    card, tx_id = ctx.uid("card"), ctx.uid("tx")
    bad: list[dict[str, Any]] = [
        {"label": "maybe"},
        {"label": "FRAUD"},
        {"source": "Analyst!"},
        {"source": "a" * 33},
        {"source": ""},
        {"labeled_at": "2024-01-01T00:00:00"},
        {"card_id": ...},
        {"transaction_id": " "},
        {"extra": 1},
        {"label": None},
    ]
    return [
        dead(
            "label_invalid",
            dump(label_fields(ctx, card, tx_id, **b)),
            RejectReason.INVALID,
            topic=LABELS,
        )
        for b in bad
    ]


@kind("label_future")
def _label_future(ctx: Context) -> list[PoisonRecord]:
    label = label_fields(ctx, ctx.uid("card"), ctx.uid("tx"), labeled_at="9999-12-31T23:59:59Z")
    return [dead("label_future", dump(label), RejectReason.FUTURE_TIMESTAMP, topic=LABELS)]


@kind("label_garbage")
def _label_garbage(ctx: Context) -> list[PoisonRecord]:
    return [
        dead("label_garbage", None, RejectReason.INVALID, topic=LABELS),
        dead("label_garbage", b"", RejectReason.NOT_JSON, topic=LABELS),
        dead("label_garbage", b"[" * NESTING_SHALLOW, topic=LABELS),
        dead("label_garbage", b"\xff\xfe", RejectReason.NOT_JSON, topic=LABELS),
        dead("label_garbage", dump(tx_fields(ctx)), RejectReason.INVALID, topic=LABELS),
    ]


# --- control --------------------------------------------------------------------------


def _control(name: str, fields: dict[str, Any], expect: Expect) -> PoisonRecord:
    """A valid control message (its dead letter, if any, comes from the model step)."""
    return PoisonRecord(
        name,
        CONTROL,
        dump(fields),
        expect,
        key=b"model",
        reason=RejectReason.INVALID if expect is Expect.DEAD_LETTER else None,
        control_id=fields["control_id"],
    )


@kind("control_unknown_model")
def _control_unknown_model(ctx: Context) -> list[PoisonRecord]:
    fields = control_fields(
        ctx, action="set_deciding_model", thresholds=..., model_name="no-such-model"
    )
    return [_control("control_unknown_model", fields, Expect.DEAD_LETTER)]


@kind("control_thresholds_out_of_range")
def _control_bad_thresholds(ctx: Context) -> list[PoisonRecord]:
    bad: list[dict[str, Any]] = [
        {"mode": "fixed", "review_threshold": 1.5, "block_threshold": 2.0},
        {"mode": "fixed", "review_threshold": -0.1, "block_threshold": 0.9},
        {"mode": "fixed", "review_threshold": 0.9, "block_threshold": 0.5},
        {"mode": "fixed", "review_threshold": 0.5},
        {"mode": "volume", "review_share": 0.0, "block_share": 0.0},
        {"mode": "volume", "review_share": 1.0, "block_share": 0.5},
        {"mode": "volume", "review_share": 0.001, "block_share": 0.01},
        {"mode": "fixed", "review_threshold": 1e309, "block_threshold": 1e309},
        {"mode": "panic"},
    ]
    out = [
        dead(
            "control_thresholds_out_of_range",
            dump(control_fields(ctx, thresholds=t)),
            topic=CONTROL,
        )
        for t in bad
    ]
    nan = replace_value(
        dump(control_fields(ctx)),
        "thresholds",
        b'{"mode": "fixed", "review_threshold": NaN, "block_threshold": NaN}',
    )
    out.append(dead("control_thresholds_out_of_range", nan, topic=CONTROL))
    return out


@kind("control_invalid")
def _control_invalid(ctx: Context) -> list[PoisonRecord]:
    bad: list[dict[str, Any]] = [
        {"action": "self_destruct"},
        {"thresholds": ...},
        {"action": "set_deciding_model", "thresholds": ..., "model_name": ""},
        {"requested_at": "now"},
        {"requested_by": ...},
        {"control_id": 7},
    ]
    out = [
        dead("control_invalid", dump(control_fields(ctx, **b)), RejectReason.INVALID, topic=CONTROL)
        for b in bad
    ]
    out += [
        dead("control_invalid", None, RejectReason.INVALID, topic=CONTROL),
        dead("control_invalid", b"", RejectReason.NOT_JSON, topic=CONTROL),
        dead("control_invalid", b'{"a":' * NESTING_SHALLOW, topic=CONTROL),
        dead("control_invalid", b"[]", RejectReason.INVALID, topic=CONTROL),
    ]
    return out


@kind("control_valid_defaults")
def _control_valid(ctx: Context) -> list[PoisonRecord]:
    # Sets the thresholds the detector starts with: applied, and decisions unchanged.
    fields = control_fields(ctx)
    return [_control("control_valid_defaults", fields, Expect.QUIET)]


# --- the corpus -------------------------------------------------------------------------


def corpus(
    rounds: int = 1,
    *,
    run: str = "poison",
    now: datetime | None = None,
    seed: int = 0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    heavy: bool = True,
    kinds: list[str] | None = None,
) -> list[PoisonRecord]:
    """``rounds`` rounds of every kind (or of ``kinds``), heavy kinds in the first only.

    Records of a kind stay in order (a sequence on one card keeps its order), and
    rounds are shuffled kind by kind with ``seed``.
    """
    ctx = Context(
        run=run,
        now=now or datetime.now(UTC),
        max_message_bytes=max_message_bytes,
        rng=random.Random(seed),
    )
    names = list(kinds) if kinds is not None else list(KINDS)
    unknown = set(names) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown poison kinds: {sorted(unknown)}")
    records: list[PoisonRecord] = []
    for round_ in range(rounds):
        batch = [n for n in names if n not in HEAVY or (heavy and round_ == 0)]
        ctx.rng.shuffle(batch)
        for name in batch:
            records.extend(KINDS[name](ctx))
    return records


def kinds_of(records: list[PoisonRecord]) -> set[str]:
    return {r.kind for r in records}


if __name__ == "__main__":  # a summary: python -m tests.poison
    sample = corpus()
    for name in sorted(kinds_of(sample)):
        mine = [r for r in sample if r.kind == name]
        print(f"{name:40} {len(mine):5} records, {sum(r.size for r in mine):9} bytes")
    print(f"{len(KINDS)} kinds, {len(sample)} records")
