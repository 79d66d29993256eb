"""Per-card state: its size, its features against a plain reference, the ids it knows."""

from __future__ import annotations

import math
import pickle
import statistics
from array import array
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.replay.simulator import SimulationConfig, simulate
from models import CardProfile
from models.card import DAY, transaction_key
from models.card_features import HOUR, LARGE_RATIO, MIN_AMOUNT, SCALE_BITS, bounded_amount
from models.packing import (
    pack_amounts,
    pack_int64,
    pack_times,
    pack_uints,
    unpack_amounts,
    unpack_int64,
    unpack_times,
    unpack_uints,
)

T0 = 1_700_000_000.0


# --- size ------------------------------------------------------------------------------


def test_a_month_of_a_typical_card_pickles_in_under_a_kilobyte() -> None:
    # 30 days of the Handbook's simulation (as many terminals per customer as in its
    # default run): about 60 transactions per card, every one with its id.
    config = SimulationConfig(n_customers=200, n_terminals=1000, days=30)
    cards: dict[str, CardProfile] = {}
    for record in simulate(config):
        tx = record.transaction
        card = cards.setdefault(tx.card_id, CardProfile())
        assert card.knows(tx.transaction_id) is None
        card.observe(tx.epoch_seconds, tx.amount, tx.terminal_id, transaction_id=tx.transaction_id)
    assert statistics.mean(len(card) for card in cards.values()) > 50
    assert all(card.ids_held == len(card) for card in cards.values())
    sizes = [len(pickle.dumps(card, protocol=pickle.HIGHEST_PROTOCOL)) for card in cards.values()]
    assert statistics.mean(sizes) <= 1024, statistics.mean(sizes)


# --- features against a plain list of events ---------------------------------------------


@dataclass(frozen=True)
class Event:
    ts: float
    amount: float
    terminal: str
    transaction_id: str


def remembered(events: list[Event], max_events: int) -> list[Event]:
    """The latest ``max_events`` events in time order (equal times: in arrival order)."""
    ordered = sorted(events, key=lambda e: e.ts)  # stable
    return ordered[max(0, len(ordered) - max_events) :]


def in_window(events: list[Event], span: float, now: float, max_events: int) -> list[Event]:
    """Events not yet forgotten (within ``span`` of the latest one) and, as of ``now``,
    within ``span`` before it (boundary included) and not after it."""
    if not events:
        return []
    latest = max(e.ts for e in events)
    return [
        e
        for e in remembered(events, max_events)
        if e.ts >= latest - span and now - span <= e.ts <= now
    ]


def exact_mean(amounts: list[float]) -> Fraction:
    return sum(map(Fraction, amounts), Fraction(0)) / len(amounts)


def reference_features(
    events: list[Event],
    now: float,
    amount: float,
    terminal: str,
    history_days: float,
    max_events: int,
) -> dict[str, float]:
    """The card features computed the plain way, exactly, from the list of events."""
    amount = bounded_amount(amount)
    history = in_window(events, history_days * DAY, now, max_events)
    week = in_window(events, 7 * DAY, now, max_events)
    day = in_window(events, DAY, now, max_events)
    hour = in_window(events, HOUR, now, max_events)
    amounts = [bounded_amount(e.amount) for e in history]
    n = len(amounts)
    if n:
        mean_q = exact_mean(amounts)
        mean = float(mean_q)
        variance = float(sum(((Fraction(a) - mean_q) ** 2 for a in amounts), Fraction(0)) / n)
        std = max(math.sqrt(variance), 0.1 * mean)
    else:
        mean, std = amount, 0.0
    last = max((e.ts for e in history), default=None)
    week_amounts = [bounded_amount(e.amount) for e in week]
    return {
        "amount": amount,
        "log_amount": math.log1p(amount),
        "card_tx_1h": float(len(hour)),
        "card_tx_24h": float(len(day)),
        "card_tx_7d": float(len(week)),
        "card_amount_24h": float(sum(map(Fraction, (bounded_amount(e.amount) for e in day)))),
        "card_history_tx": float(n),
        "card_mean_amount": mean,
        "card_amount_ratio": amount / mean,
        "card_hours_since_last": min((now - last) / HOUR, 720.0) if last is not None else 720.0,
        "card_new_terminal": float(all(e.terminal != terminal for e in history)) if n else 0.0,
        "card_amount_zscore": max(-20.0, min(20.0, (amount - mean) / std)) if n else 0.0,
        "card_amount_ratio_7d": amount / float(exact_mean(week_amounts)) if week else 1.0,
        "card_frauds_14d": 0.0,
        "card_max_ratio_7d": max(week_amounts) / mean if week and n else 1.0,
        "card_large_7d": float(sum(a >= LARGE_RATIO * mean for a in week_amounts) if n else 0),
    }


# Offsets that collide (equal times), cross window boundaries exactly, or arrive late.
OFFSETS = [0.0, 0.0, 1.0, -1.0, HOUR, -HOUR, DAY, 7 * DAY, -7 * DAY, 30 * DAY, -31 * DAY, 0.5]
AMOUNTS = [5e-324, 0.0, -3.0, 0.01, 0.015, 20.0, 57.16, 1e12, 1e300, math.inf, math.nan]

offsets = st.sampled_from(OFFSETS) | st.floats(-40 * DAY, 40 * DAY)
amounts = st.sampled_from(AMOUNTS) | st.floats(allow_nan=True, allow_infinity=True)
terminals = st.sampled_from(["t1", "t2", "t3", "t\n4", ""])


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Events arriving around T0, often out of order."""
    steps = draw(st.lists(st.tuples(offsets, amounts, terminals), max_size=30))
    events: list[Event] = []
    clock = T0
    for i, (offset, amount, terminal) in enumerate(steps):
        if draw(st.booleans()):  # the clock moves on; otherwise the event is late or early
            clock += abs(offset)
            ts = clock
        else:
            ts = clock + offset
        events.append(Event(ts, amount, terminal, f"tx{i}"))
    return events


params = st.fixed_dictionaries(
    {
        "history_days": st.sampled_from([30.0, 2.0, 0.5]),
        "max_events": st.sampled_from([1000, 5, 1]),
        "label_horizon_days": st.sampled_from([45.0, 1.0]),
    }
)


def fed(events: list[Event], **kwargs: float) -> CardProfile:
    card = CardProfile(**kwargs)  # type: ignore[arg-type]
    for e in events:
        card.observe(e.ts, e.amount, e.terminal, transaction_id=e.transaction_id)
    return card


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=histories(),
    probes=st.lists(st.tuples(offsets, amounts, terminals), min_size=1, max_size=5),
    kwargs=params,
)
def test_features_equal_a_plain_computation_over_the_events(
    events: list[Event], probes: list[tuple[float, float, str]], kwargs: dict[str, float]
) -> None:
    card = fed(events, **kwargs)
    restored = pickle.loads(pickle.dumps(card))
    latest = max((e.ts for e in events), default=T0)
    history_days, max_events = kwargs["history_days"], int(kwargs["max_events"])
    for offset, amount, terminal in probes:
        now = latest + offset  # after the latest transaction, or a late one
        expected = reference_features(events, now, amount, terminal, history_days, max_events)
        assert card.features(now, amount, terminal) == expected
        assert restored.features(now, amount, terminal) == expected
    history = in_window(events, history_days * DAY, latest, max_events)
    assert len(card) == len(history)
    assert card.last_seen == (latest if history else None)


@settings(max_examples=300, deadline=None)
@given(events=histories(), kwargs=params)
def test_ids_are_known_for_the_label_horizon_and_max_events(
    events: list[Event], kwargs: dict[str, float]
) -> None:
    card = fed(events, **kwargs)
    latest = max((e.ts for e in events), default=T0)
    horizon = latest - kwargs["label_horizon_days"] * DAY
    known = [e for e in remembered(events, int(kwargs["max_events"])) if e.ts >= horizon]
    expected = {e.transaction_id: (e.ts, e.terminal) for e in known}
    assert card.ids_held == len(expected)
    for e in events:
        assert card.knows(e.transaction_id) == expected.get(e.transaction_id)
    assert card.knows("never-seen") is None
    restored = pickle.loads(pickle.dumps(card))
    assert all(restored.knows(e.transaction_id) == card.knows(e.transaction_id) for e in events)
    assert pickle.dumps(restored) == pickle.dumps(card)


# --- the ids ---------------------------------------------------------------------------------


def test_a_transaction_is_known_with_its_time_and_terminal() -> None:
    card = CardProfile()
    card.observe(T0, 10.0, "t1", transaction_id="a")
    card.observe(T0 - HOUR, 20.0, "t2", transaction_id="b")  # late
    card.observe(T0 + HOUR, 30.0, "t1")  # without an id
    assert card.knows("a") == (T0, "t1")
    assert card.knows("b") == (T0 - HOUR, "t2")
    assert card.knows("c") is None
    assert card.ids_held == 2 and len(card) == 3


def test_ids_outlive_the_history_for_the_label_horizon() -> None:
    card = CardProfile(history_days=30, label_horizon_days=45)
    card.observe(T0, 10.0, "t1", transaction_id="old")
    card.observe(T0 + 40 * DAY, 10.0, "t2", transaction_id="new")
    assert len(card) == 1  # the old one no longer counts in the features ...
    assert card.knows("old") == (T0, "t1")  # ... but its label can still be routed
    card.observe(T0 + 45 * DAY, 10.0, "t2", transaction_id="newer")
    assert card.knows("old") == (T0, "t1")  # exactly 45 days: still known
    card.observe(T0 + 45 * DAY + 1, 10.0, "t2", transaction_id="newest")
    assert card.knows("old") is None
    assert card.ids_held == 3


def test_ids_are_bound_by_max_events() -> None:
    card = CardProfile(max_events=3)
    for i in range(5):
        card.observe(T0 + i, 10.0, "t1", transaction_id=f"tx{i}")
    assert [card.knows(f"tx{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert card.ids_held == 3


def test_transaction_key_is_a_signed_64_bit_digest() -> None:
    keys = {transaction_key(f"tx-{i}") for i in range(10_000)}
    assert len(keys) == 10_000
    assert all(-(2**63) <= k < 2**63 and k != 0 for k in keys)
    assert transaction_key("\ud800") != transaction_key("\ud801")  # lone surrogates hash too


def test_terminal_table_keeps_only_what_the_log_uses() -> None:
    card = CardProfile(max_events=10)
    for i in range(1000):
        card.observe(T0 + i * HOUR, 10.0, f"t{i}", transaction_id=f"tx{i}")
    assert len(card._terminals) <= 2 * len(card._times) + 8
    state = card.__getstate__()
    assert state[8] == "\n".join(f"t{i}" for i in range(990, 1000))
    assert card.knows("tx995") == (T0 + 995 * HOUR, "t995")


# --- exact sums --------------------------------------------------------------------------


def test_every_bounded_amount_scales_to_an_integer() -> None:
    for amount in (MIN_AMOUNT, 0.015, 57.16, 1 / 3, 1e12):
        assert math.ldexp(amount, SCALE_BITS).is_integer()
    assert not math.ldexp(MIN_AMOUNT, SCALE_BITS - 1).is_integer()  # and no fewer bits do


def test_a_huge_amount_leaves_no_residue_when_it_leaves_the_window() -> None:
    card = CardProfile()
    card.observe(T0, 1e12, "t1")
    for i in range(1, 4):
        card.observe(T0 + 2 * DAY + i, 10.0 + i, "t1")
    x = card.features(T0 + 2 * DAY + 10, 12.0, "t1")
    assert x["card_amount_24h"] == 11.0 + 12.0 + 13.0
    assert x["card_amount_ratio_7d"] == 12.0 / ((1e12 + 36.0) / 4)
    y = card.features(T0 + 8 * DAY, 12.0, "t1")
    assert y["card_tx_7d"] == 3.0 and y["card_amount_ratio_7d"] == 1.0  # mean 12, exactly


# --- packing ---------------------------------------------------------------------------------

doubles = st.floats(allow_nan=True, allow_infinity=True)


@given(st.lists(st.integers(0, 2**70), max_size=50))
def test_uints_round_trip(values: list[int]) -> None:
    assert unpack_uints(pack_uints(values), len(values)) == values


@given(
    st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.0**62, 0.5]) | doubles, max_size=40), st.booleans()
)
def test_times_round_trip_bit_for_bit(values: list[float], ordered: bool) -> None:
    times = array("d", sorted(v for v in values if not math.isnan(v)) if ordered else values)
    assert unpack_times(pack_times(times), len(times)).tobytes() == times.tobytes()


@given(st.lists(st.sampled_from([0.01, 57.16, 1e12, 0.015, 42949672.95]) | doubles, max_size=40))
def test_amounts_round_trip_bit_for_bit(values: list[float]) -> None:
    amounts = array("d", values)
    assert unpack_amounts(pack_amounts(amounts), len(amounts)).tobytes() == amounts.tobytes()


def test_whole_seconds_and_cents_are_packed_small() -> None:
    times = array("d", [T0 + i * 43_200.0 for i in range(60)])
    assert len(pack_times(times)) < 60 * 2.5
    amounts = array("d", [round(10 + i * 3.17, 2) for i in range(60)])
    assert len(pack_amounts(amounts)) < 60 * 2
    assert len(pack_amounts(array("d", [0.001]))) == 9  # not whole cents: raw


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20))
def test_int64_round_trip(values: list[int]) -> None:
    assert unpack_int64(pack_int64(array("q", values))) == array("q", values)


@pytest.mark.parametrize("count", [0, 1, 7])
def test_empty_and_zero_sequences(count: int) -> None:
    assert unpack_uints(pack_uints([0] * count), count) == [0] * count
    assert len(unpack_times(pack_times(array("d")), 0)) == 0
