"""Poison kinds of a transaction's fields: wrong, missing and extra fields, identifiers,
timestamps, metadata, and records at and over the size limit.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from detector.contracts import RejectReason
from tests.poison_records import (
    Context,
    Kind,
    PoisonRecord,
    dead,
    dump,
    either_tx,
    iso,
    kind,
    padded,
    replace_value,
    tx_fields,
    valid_tx,
)

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
