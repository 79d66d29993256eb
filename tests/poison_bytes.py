"""Poison kinds of raw bytes: records that are not a transaction's JSON (broken encodings,
deep nesting, stray top-level values, odd keys) and amounts written as hostile JSON
literals or extreme numbers.
"""

from __future__ import annotations

import json
from datetime import timedelta

from detector.contracts import RejectReason
from tests.poison_records import (
    NESTING_DEEP,
    NESTING_SHALLOW,
    Context,
    Kind,
    PoisonRecord,
    dead,
    dump,
    either_tx,
    iso,
    kind,
    replace_value,
    tx_fields,
    valid_tx,
)

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
