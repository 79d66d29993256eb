"""The simulator: reproducible, time-ordered, and statistically like the Handbook's data."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest

from detector.replay.datasets import Record
from detector.replay.simulator import SimulationConfig, simulate

START = datetime(2018, 4, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def six_weeks() -> list[Record]:
    """Six weeks of the Handbook-sized simulation (about 400,000 transactions)."""
    return list(simulate(SimulationConfig(days=42)))


def _day(record: Record) -> int:
    return (record.transaction.timestamp - START).days


def test_same_seed_same_records_and_other_seed_differs() -> None:
    config = SimulationConfig(n_customers=300, n_terminals=600, days=3, seed=7)
    first = list(simulate(config))
    assert first == list(simulate(config))
    assert first != list(simulate(SimulationConfig(n_customers=300, n_terminals=600, days=3)))


def test_endless_simulation_is_lazy_and_extends_a_finite_one() -> None:
    finite = list(simulate(SimulationConfig(n_customers=200, n_terminals=400, days=2)))
    endless = simulate(SimulationConfig(n_customers=200, n_terminals=400, days=None))
    assert list(islice(endless, len(finite))) == finite
    assert _day(next(endless)) >= 2


def test_records_are_valid_time_ordered_and_uniquely_identified(
    six_weeks: list[Record],
) -> None:
    times = [r.transaction.timestamp for r in six_weeks]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + timedelta(days=42)
    ids = [r.transaction.transaction_id for r in six_weeks]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "sim-0-0"
    first = six_weeks[0].transaction
    assert first.card_id.startswith("card-") and first.terminal_id.startswith("term-")
    assert all(r.transaction.amount > 0 for r in six_weeks)
    assert all(r.is_fraud == (r.scenario != 0) for r in six_weeks)


def test_volume_is_about_two_transactions_per_customer_per_day(
    six_weeks: list[Record],
) -> None:
    # Handbook: 1,169,723 transactions for 5,000 customers over 122 days = 1.92.
    per_customer_day = len(six_weeks) / 5000 / 42
    assert 1.8 < per_customer_day < 2.05
    cards = {r.transaction.card_id for r in six_weeks}
    assert len(cards) > 0.85 * 5000  # a quarter have < 1/day on average, few have 0


def test_fraud_share_and_scenarios_match_the_handbook(six_weeks: list[Record]) -> None:
    # Fraud builds up as compromised terminals (28 days) and cards (14 days) accumulate.
    settled = [r for r in six_weeks if _day(r) >= 28]
    share = sum(bool(r.is_fraud) for r in settled) / len(settled)
    assert 0.005 < share < 0.015  # the Handbook's data: 0.81 %
    scenarios = Counter(r.scenario for r in six_weeks)
    assert scenarios.keys() == {0, 1, 2, 3}
    # In the Handbook terminals give most frauds, then cards, then large amounts.
    assert scenarios[2] > scenarios[3] > scenarios[1] > 0


def test_scenario_rules_hold(six_weeks: list[Record]) -> None:
    for record in six_weeks:
        if record.scenario == 0:
            assert record.transaction.amount <= 220
        if record.scenario == 1:
            assert record.transaction.amount > 220
    compromised_card_amounts = [r.transaction.amount for r in six_weeks if r.scenario == 3]
    genuine_amounts = [r.transaction.amount for r in six_weeks if r.scenario == 0]
    mean = sum(compromised_card_amounts) / len(compromised_card_amounts)
    assert mean > 3 * sum(genuine_amounts) / len(genuine_amounts)  # amounts x5


def test_compromised_terminal_frauds_all_its_transactions_for_28_days(
    six_weeks: list[Record],
) -> None:
    by_terminal: dict[str, list[Record]] = {}
    for record in six_weeks:
        by_terminal.setdefault(record.transaction.terminal_id, []).append(record)
    terminal, records = next(
        (t, rs) for t, rs in by_terminal.items() if any(r.scenario == 2 for r in rs)
    )
    first = min(_day(r) for r in records if r.scenario == 2)
    window = [r for r in records if first <= _day(r) < first + 28]
    # Inside the window only scenario 3 (the card) may override the terminal's fraud.
    assert all(r.scenario in (2, 3) for r in window), terminal


def test_an_endless_simulation_makes_about_9600_transactions_a_day() -> None:
    # 5,000 customers spend about two transactions a day each (Handbook: 9,000 to 10,000).
    # The generator is lazy: four days arrive without simulating any day after them.
    records = simulate(SimulationConfig(days=None))
    per_day = Counter(_day(r) for r in islice(records, 40_000))
    assert all(9_000 <= per_day[day] <= 10_500 for day in range(4)), per_day


def test_customers_without_terminals_make_no_transactions() -> None:
    config = SimulationConfig(n_customers=50, n_terminals=2, radius=0.01, days=5)
    assert list(simulate(config)) == []


def test_start_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulationConfig(start=datetime(2018, 4, 1))
