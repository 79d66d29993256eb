"""Poison kinds of more than one record or another topic: a transaction repeated, a card
at many terminals or one instant, labels, and control messages.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from detector.contracts import RejectReason
from tests.poison_records import (
    CONTROL,
    LABELS,
    NESTING_SHALLOW,
    TRANSACTIONS,
    Context,
    Expect,
    PoisonRecord,
    control_fields,
    dead,
    dump,
    iso,
    kind,
    label_fields,
    replace_value,
    tx_fields,
    valid_tx,
)

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
