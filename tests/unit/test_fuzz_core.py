"""No input stops the scoring core: arbitrary streams of transactions, labels and controls."""

from __future__ import annotations

import math
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.contracts import (
    Control,
    Label,
    ModelStatus,
    RejectReason,
    ThresholdChange,
    Transaction,
)
from detector.core import ScoringCore
from detector.items import ControlApplied, Learned, ModelOut, Noticed, Rejected, Scored
from detector.settings import ScoringSettings
from tests.unit.test_fuzz import FUZZ, HEAVY_FUZZ, NOW, check_scored

CARDS = [f"card-{i}" for i in range(3)]


TERMINALS = [f"term-{i}" for i in range(4)]


TX_IDS = [f"tx-{i}" for i in range(8)]


MAX_FLOAT = 1.7976931348623157e308


SPECIAL_AMOUNTS = [5e-324, 1e-300, 2.2250738585072014e-308, 0.01, 12.5, 1e12, 1e15, MAX_FLOAT]


amounts = st.sampled_from(SPECIAL_AMOUNTS) | st.floats(
    min_value=5e-324, max_value=MAX_FLOAT, allow_subnormal=True
)


BASES = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),  # year 0 in UTC
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2018, 4, 1, tzinfo=UTC),
    NOW - timedelta(days=1),
    NOW,
]


OFFSETS = [0, 0, 0, 1, -1, 59, 3600, -3600, 86400, -86400 * 31, 86400 * 46, 1e-6]


@st.composite
def event_times(draw: st.DrawFn) -> datetime:
    """Times from year 1 to now, often equal, often out of order."""
    base = draw(st.sampled_from(BASES))
    offset = draw(st.sampled_from(OFFSETS) | st.floats(-1e9, 1e9))
    try:
        when = base + timedelta(seconds=offset)
    except OverflowError:
        return base
    return min(when, NOW)


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    return Transaction(
        transaction_id=draw(st.sampled_from(TX_IDS)),
        timestamp=draw(event_times()),
        card_id=draw(st.sampled_from(CARDS)),
        terminal_id=draw(st.sampled_from(TERMINALS)),
        amount=draw(amounts),
    )


@st.composite
def labels(draw: st.DrawFn) -> Label:
    return Label(
        transaction_id=draw(st.sampled_from(TX_IDS)),
        card_id=draw(st.sampled_from(CARDS)),
        label=draw(st.sampled_from(["fraud", "legit"])),
        source=draw(st.sampled_from(["analyst", "chargeback"])),
        labeled_at=draw(event_times()),
    )


@st.composite
def controls(draw: st.DrawFn) -> Control:
    n = draw(st.integers(0, 10**6))
    if draw(st.booleans()):
        return Control(
            control_id=f"c-{n}",
            action="set_deciding_model",
            model_name=draw(st.sampled_from(["hybrid-tail-logreg", "hybrid-tail-tree", "nope"])),
            requested_by="fuzz",
            requested_at=NOW,
        )
    mode = draw(st.sampled_from(["fixed", "volume", "capacity"]))
    if mode == "fixed":
        review = draw(st.floats(0, 1))
        change = ThresholdChange(
            mode="fixed", review_threshold=review, block_threshold=draw(st.floats(review, 1))
        )
    elif mode == "capacity":
        change = ThresholdChange(
            mode="capacity",
            review_capacity_per_hour=draw(st.floats(1e-6, 1_000_000)),
            block_threshold=draw(st.none() | st.floats(0, 1)),
        )
    else:
        review_share = draw(st.floats(1e-9, 1, exclude_max=True))
        change = ThresholdChange(
            mode="volume",
            review_share=review_share,
            block_share=draw(st.floats(1e-9, review_share)),
        )
    return Control(
        control_id=f"c-{n}",
        action="set_thresholds",
        thresholds=change,
        requested_by="fuzz",
        requested_at=NOW,
    )


events = st.lists(
    st.one_of(transactions(), transactions(), transactions(), labels(), controls()), max_size=40
)


configs = st.builds(
    ScoringSettings,
    presume_legit_days=st.sampled_from([0.0, 14.0]),
    classifier_warmup_frauds=st.sampled_from([1, 50]),
    threshold_mode=st.sampled_from(["capacity", "volume", "fixed"]),
    card_history_max=st.sampled_from([10, 1000]),
)


def run_checked(
    core: ScoringCore,
    stream: list[Transaction | Label | Control],
    seen: set[tuple[str, str]] | None = None,
) -> list[Scored]:
    """Feed ``stream`` to ``core``, checking each output; the decisions, in order.

    ``seen`` holds the (card, transaction) pairs ``core`` was given before, if any.
    """
    seen = set() if seen is None else set(seen)
    decided: list[Scored] = []
    for event in stream:
        out: list[ModelOut | Rejected] = core.process(event)
        for item in out:
            assert isinstance(item, Scored | Learned | ControlApplied | Rejected | Noticed), item
        if isinstance(event, Transaction):
            mine = [o for o in out if isinstance(o, Scored) and o.transaction is event]
            assert all(o.transaction is event for o in out if isinstance(o, Scored))
            refused = [
                o
                for o in out
                if isinstance(o, Rejected) and o.reason is not RejectReason.UNKNOWN_TRANSACTION
            ]
            assert len(mine) + len(refused) == 1, (event, out)
            identity = (event.card_id, event.transaction_id)
            if identity not in seen:
                assert mine, f"a first transaction was refused: {event} -> {refused}"
            seen.add(identity)
            for scored in mine:
                check_scored(scored)
            decided.extend(mine)
        elif isinstance(event, Control):
            assert len(out) == 1 and isinstance(out[0], ControlApplied | Rejected)
        else:
            assert not any(isinstance(o, Scored) for o in out)
    for status in core.statuses():
        back = ModelStatus.model_validate_json(status.model_dump_json())
        figures = [back.quality.model_dump()] + [p.model_dump() for p in back.trend]
        for value in (v for f in figures for v in f.values() if not isinstance(v, dict)):
            assert value is None or not isinstance(value, float) or math.isfinite(value)
        assert all(n >= 0 for n in back.quality.sources.values())
        assert math.isfinite(back.classifier_weight)
    return decided


def verdict(scored: Scored) -> tuple[Any, ...]:
    return (
        scored.transaction.transaction_id,
        scored.decision,
        scored.score,
        tuple(scored.reasons),
        tuple(sorted(scored.features.items())),
        scored.model_name,
    )


@FUZZ
@given(configs, events)
def test_core_decides_every_valid_transaction_once(
    config: ScoringSettings, stream: list[Transaction | Label | Control]
) -> None:
    run_checked(ScoringCore(config), stream)


@FUZZ
@given(events, st.integers(0, 40))
def test_core_resumed_from_a_snapshot_decides_the_same(
    stream: list[Transaction | Label | Control], cut: int
) -> None:
    """As after a crash: state pickled mid-stream, then both copies see the rest."""
    core = ScoringCore()
    run_checked(core, stream[:cut])
    seen = {(e.card_id, e.transaction_id) for e in stream[:cut] if isinstance(e, Transaction)}
    resumed = pickle.loads(pickle.dumps(core))
    rest = stream[cut:]
    assert [verdict(s) for s in run_checked(resumed, rest, seen)] == [
        verdict(s) for s in run_checked(core, rest, seen)
    ]


def test_subnormal_then_normal_amount_on_a_new_card() -> None:
    core = ScoringCore()
    when = datetime(2024, 1, 1, tzinfo=UTC)
    first = Transaction(
        transaction_id="a", timestamp=when, card_id="new", terminal_id="t", amount=5e-324
    )
    second = first.model_copy(
        update={"transaction_id": "b", "amount": 12.5, "timestamp": when + timedelta(seconds=1)}
    )
    assert len(run_checked(core, [first, second])) == 2


@pytest.mark.slow
@HEAVY_FUZZ
@given(
    st.lists(
        st.one_of(transactions(), transactions(), labels(), controls()), min_size=20, max_size=150
    )
)
def test_core_with_challengers_on_long_streams(stream: list[Transaction | Label | Control]) -> None:
    config = ScoringSettings(
        challengers=("tree", "forest"), classifier_warmup_frauds=1, presume_legit_days=14.0
    )
    run_checked(ScoringCore(config), stream)
